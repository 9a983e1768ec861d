"""The command line: config errors get one line naming the key and exit code 2; eval works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recurrl.app.cli import main, plain_text
from recurrl.config import field_docs

BAD_INPUTS = [
    (["ppo.learnin_rate=0.1"], "unknown key ppo.learnin_rate (did you mean ppo.learning_rate?)"),
    (["ppo.learning_rate=-0.1"], "ppo.learning_rate: must be > 0"),
    (["ppo.learning_rate=fast"], "ppo.learning_rate: expected float, got 'fast'"),
    (["env.num_envs=2.5"], "env.num_envs: expected int"),
    (["ppo.bptt_len=48", "ppo.rollout_len=128"], "ppo.bptt_len=48 must divide ppo.rollout_len"),
    (
        ["policy.core=mamba"],
        "policy.core: must be one of lstm, gru, rnn, mingru, transformer, tcn, none",
    ),
    (["ppo.gamma=1.5"], "ppo.gamma: must be in [0, 1]"),
    (["env.id=recurrl/CartPoleNoVelocty-v0"], "env.id: unknown environment"),
    (["env.id=no_such_module:Env-v0"], "env.id: cannot import module 'no_such_module'"),
    (["tracking.wandb.mode=sometimes"], "tracking.wandb.mode: must be one of"),
    (["env.kwargs.not_an_arg=3"], "env.kwargs: recurrl/CartPoleNoVelocity-v0 rejected"),
    (["ppo"], "expected dotted.key=value"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS)
def test_bad_config_values_exit_2_with_one_line(overrides, message, tmp_path, capsys):
    code = main(["train", "experiments/quickstart.yaml", f"run.dir={tmp_path}/run", *overrides])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing started


def test_missing_file_and_malformed_yaml(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nppo:\n  rollout_len: [1, 2\n  bptt_len: 3\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line" in err and "malformed YAML" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recurrl", "train", "experiments/quickstart.yaml", "ppo.foo=1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "recurrl: error: unknown key ppo.foo"


def test_train_then_eval_writes_eval_json(tiny_overrides, tmp_path, capsys):
    assert main(["train", "experiments/quickstart.yaml", *tiny_overrides, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training return:" in out and "final policy: return" in out
    assert "episodes (deterministic)" in out
    run_dir = tmp_path / "run"
    assert main(["eval", str(run_dir), "--episodes", "5", "--deterministic"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("return ") and line.endswith("over 5 episodes (deterministic)")
    written = json.loads((run_dir / "eval.json").read_text())
    assert written["episodes"] == 5 and len(written["returns"]) == 5
    assert main(["eval", str(tmp_path / "missing")]) == 2


def test_wandb_agent_argument_form(tiny_overrides, tmp_path):
    # `wandb agent` runs the program with --key=value arguments.
    args = ["train", "experiments/quickstart.yaml", *tiny_overrides, "--ppo.update_epochs=1"]
    assert main([*args, "--quiet", "--eval-episodes=0"]) == 0
    assert "update_epochs: 1" in (tmp_path / "run" / "config.yaml").read_text()


def test_keys_lists_every_key_with_its_docstring(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "ppo.bptt_len" in out and "must divide" in out
    assert "tracking.wandb.mode" in out


def test_plain_text_drops_rst_markup():
    doc = "``auto`` or :class:`ConfigError` from :func:`~recurrl.config.load_config`."
    assert plain_text(doc) == "auto or ConfigError from recurrl.config.load_config."
    assert plain_text(doc, markdown=True) == (
        "`auto` or `ConfigError` from `recurrl.config.load_config`."
    )


@pytest.mark.parametrize("argv", [["keys"], ["--help"], ["train", "--help"], ["keys", "--help"]])
def test_terminal_output_is_plain_text(argv, capsys):
    try:
        main(argv)
    except SystemExit as stop:  # --help exits 0
        assert stop.code == 0
    out = capsys.readouterr().out
    assert out and "``" not in out and ":class:" not in out and ":func:" not in out
    if argv == ["keys"]:  # one line per key, multi-line docstrings joined
        keys = [line.split()[0] for line in out.splitlines()]
        assert keys == [key for key, *_ in field_docs()]


def test_keys_markdown_is_one_table_row_per_key(capsys):
    assert main(["keys", "--markdown"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(rows) == len(field_docs())
    assert all(row.count(" | ") == 3 for row in rows)  # a "|" in a docstring is escaped
    assert "``" not in "".join(rows)
