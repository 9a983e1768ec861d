"""What a new user meets first: `recurrl envs` knobs, eval help, env id hints, argument order."""

from __future__ import annotations

import pytest

from recurrl import envs
from recurrl.app.cli import build_parser, main


def test_envs_lists_every_knob_with_its_default_and_bounds(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id, facts in envs.ENVIRONMENTS.items():
        assert env_id in out
        assert facts["difficulty_bounds"].keys() == facts["difficulty"].keys(), env_id
    assert "    view              5       odd, >= 3" in out
    assert "    time_budget       None    >= length + 1; None = 2 * (length + 1)" in out
    assert "env.kwargs.KNOB=VALUE" in out


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("recurrl/TMaze-v0", {"length": 0}),
        ("recurrl/TMaze-v0", {"length": 5, "time_budget": 5}),
        ("recurrl/CueRecall-v0", {"num_bits": 65}),
        ("recurrl/RepeatPrevious-v0", {"lag": 4, "length": 4}),
        ("recurrl/SequenceRecall-v0", {"num_symbols": 1}),
        ("recurrl/MemoryGrid-v0", {"view": 4}),
        ("recurrl/MemoryGrid-v0", {"view": 7, "length": 3}),
        ("recurrl/MemoryGrid-v0", {"time_budget": 0}),
        ("recurrl/Bandit-v0", {"horizon": 0}),
        ("recurrl/PointRecall-v0", {"travel_steps": 8, "max_speed": 0.1}),
    ],
)
def test_a_knob_outside_its_bounds_is_refused(env_id, kwargs):
    import gymnasium as gym

    with pytest.raises(ValueError):
        gym.make(env_id, **kwargs)


def test_every_eval_option_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name in ("eval", "plot", "envs"):
        for action in commands.choices[name]._actions:
            assert action.help, f"recurrl {name}: {action.option_strings or action.dest}"


def test_a_module_registered_id_gets_the_module_hint(tmp_path, capsys):
    args = ["train", f"run.dir={tmp_path}/r", "env.id=popgym-RepeatFirstEasy-v0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown environment 'popgym-RepeatFirstEasy-v0'" in err
    assert "write env.id=MODULE:popgym-RepeatFirstEasy-v0" in err
    assert len(err.strip().splitlines()) == 1
    # A typo in a known namespace keeps the plain did-you-mean.
    assert main(["train", f"run.dir={tmp_path}/r", "env.id=recurrl/TMaz-v0"]) == 2
    err = capsys.readouterr().err
    assert "(did you mean recurrl/TMaze-v0?)" in err and "MODULE:" not in err


def load_run(argv: list[str]):
    from recurrl.app.cli import _load_run

    args, extra = build_parser().parse_known_args(["train", *argv])
    args.extra = extra
    return _load_run(args)[0]


@pytest.mark.parametrize(
    "order",
    [
        ["CONFIG", "ppo.bptt_len=16", "seed=3"],
        ["ppo.bptt_len=16", "CONFIG", "seed=3"],
        ["ppo.bptt_len=16", "seed=3", "CONFIG"],
        ["ppo.bptt_len=16", "--quiet", "CONFIG", "seed=3"],
        ["--ppo.bptt_len=16", "seed=3", "CONFIG"],
    ],
)
def test_overrides_before_or_after_the_config_path(order, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("name: ordered\nseed: 1\nppo: {bptt_len: 8, rollout_len: 64}\n")
    config = load_run([str(config) if w == "CONFIG" else w for w in order])
    assert (config.name, config.seed, config.ppo.bptt_len, config.ppo.rollout_len) == (
        "ordered",
        3,
        16,
        64,
    )


def test_later_overrides_win_and_a_second_path_is_refused(tmp_path, capsys):
    from recurrl.run.checkpoints import CheckpointError

    config = tmp_path / "exp.yaml"
    config.write_text("name: ordered\nseed: 1\n")
    assert load_run(["seed=2", str(config), "seed=3"]).seed == 3
    assert main(["train", str(config), str(config), f"run.dir={tmp_path}/r"]) == 2
    assert "expected dotted.key=value" in capsys.readouterr().err
    with pytest.raises(CheckpointError):  # the overrides alone are not taken for a path
        load_run(["seed=2", "--resume", str(tmp_path / "nothing"), "seed=3"])


# --- honest evaluation output (issue 14, item 6) ----------------------------------------------

REFUSED = [
    (["eval", "RUN", "--episodes", "0"], "--episodes"),
    (["eval", "RUN", "--episodes", "-1"], "--episodes"),
    (["eval", "RUN", "--seed", "-3"], "--seed"),
    (["eval", "RUN", "--fps", "0"], "--fps"),
    (["eval", "RUN", "--stochastic", "--deterministic"], "--deterministic"),
    (["train", "--eval-episodes=-1"], "--eval-episodes"),
    (["suite", "SUITE.yaml", "--seeds", "0"], "--seeds"),
    (["suite", "SUITE.yaml", "--jobs", "-2"], "--jobs"),
    (["plot", "RUN", "--smooth", "0"], "--smooth"),
    (["bench", "cells", "--repeats", "0"], "--repeats"),
    (["bench", "cells", "--threads", "-1"], "--threads"),
    (["bench", "train", "--steps", "-5"], "--steps"),
    (["bench", "train", "--learning-steps", "-1"], "--learning-steps"),
    (["bench", "envs", "--sync-envs", "0"], "--sync-envs"),
    (["bench", "envs", "--seconds", "-1"], "--seconds"),
]


@pytest.mark.parametrize(("argv", "option"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_bad_number_is_one_line_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert f"argument {option}" in err and "Traceback" not in err


def test_the_console_script_refuses_a_bad_number_in_one_line():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "recurrl", "eval", "RUN", "--episodes", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "recurrl eval: error: argument --episodes: expected a positive integer, got '0' "
        "(see recurrl eval --help)\n"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.959, "0.959"),
        (0.019, "0.019"),
        (500.0, "500"),
        (487.34, "487.3"),
        (12345.6, "12346"),
        (-0.5, "-0.5"),
        (0.0, "0"),
        (-0.0, "0"),
        (0.00001234, "0.00001234"),
    ],
)
def test_returns_keep_their_significant_digits(value, text):
    from recurrl.algo.evaluate import format_return

    assert format_return(value) == text


@pytest.fixture
def untrained_checkpoint(tmp_path):
    """A run folder with an untrained PointRecall policy's checkpoint (nothing trained)."""
    import gymnasium as gym

    from recurrl.config import load_config, to_dict
    from recurrl.policy import ActorCritic
    from recurrl.run.checkpoints import save_checkpoint

    config = load_config(None, ["env.id=recurrl/PointRecall-v0", "policy.hidden_size=8"])
    env = gym.make(config.env.id)
    policy = ActorCritic(
        env.observation_space, env.action_space, config.policy, config.env.normalize_obs
    )
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir / "checkpoints" / "final.pt", policy, to_dict(config), 0)
    return run_dir


def test_eval_is_greedy_by_default_and_says_so(untrained_checkpoint, monkeypatch, capsys):
    import json

    from recurrl.algo import evaluate

    calls = []

    def fake_evaluate(policy, env_config, episodes, deterministic, seed=0):
        calls.append(deterministic)
        return [0.94, 0.978] * (episodes // 2)  # mean 0.959, std 0.019

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    run_dir = untrained_checkpoint
    for flags, mode in (([], "deterministic"), (["--deterministic"], "deterministic")):
        assert main(["eval", str(run_dir), "--episodes", "20", *flags]) == 0
        out = capsys.readouterr().out
        assert out == f"return 0.959 ± 0.019 over 20 episodes ({mode})\n"
        written = json.loads((run_dir / "eval.json").read_text())
        assert (written["mode"], written["deterministic"]) == (mode, True)
    assert main(["eval", str(run_dir), "--episodes", "4", "--stochastic"]) == 0
    assert capsys.readouterr().out == "return 0.959 ± 0.019 over 4 episodes (stochastic)\n"
    written = json.loads((run_dir / "eval.json").read_text())
    assert (written["mode"], written["deterministic"]) == ("stochastic", False)
    assert calls == [True, True, False]


def test_eval_runs_greedy_episodes_for_real(untrained_checkpoint, capsys):
    assert main(["eval", str(untrained_checkpoint), "--episodes", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("return ") and line.endswith(" over 2 episodes (deterministic)")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("exp.yaml", "name: x\nseed: 1\n", "not a checkpoint (a YAML file"),
        ("notes.txt", "hello\n", "not a checkpoint (a text file)"),
        ("damaged.pt", "not a checkpoint", "cannot read checkpoint"),  # named .pt: damaged
    ],
)
def test_eval_of_a_file_that_is_not_a_checkpoint_says_so(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(content)
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err
    assert len(err.strip().splitlines()) == 1
    if not name.endswith(".pt"):
        assert "cannot read" not in err and "corrupted" not in err
