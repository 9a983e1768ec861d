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
