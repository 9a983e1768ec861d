"""metrics.jsonl and W&B (offline, read back from its own files), determinism of a run."""

from __future__ import annotations

import io
import json
import sys
import time
import types

import pytest

from recurrl.app.cli import main
from recurrl.config import load_config
from recurrl.run.progress import format_duration, make_console
from recurrl.run.resume import resume_checkpoint, resume_config
from recurrl.run.train import train
from tests.conftest import TIMING, interrupt_after
from tests.wandb_files import read_offline_run, read_offline_runs


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_folder_layout_and_metrics(tiny_overrides, tmp_path):
    result = train(load_config("experiments/quickstart.yaml", tiny_overrides), quiet=True)
    run_dir = result.run_dir
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert (run_dir / "checkpoints" / "final.pt").is_file()
    metrics = read_metrics(run_dir)
    assert [m["global_step"] for m in metrics] == [128, 256, 384, 512]
    for key in ("episodic_return", "episodic_length", "sps", "policy_loss", "value_loss"):
        assert key in metrics[-1]
    resolved = (run_dir / "config.yaml").read_text()
    assert "bptt_len: 8" in resolved and "clip_coef: 0.2" in resolved  # defaults filled in


def test_same_seed_twice_gives_identical_metrics(tiny_overrides, tmp_path):
    runs = []
    for name in ("a", "b"):
        overrides = [o for o in tiny_overrides if not o.startswith("run.dir")]
        config = load_config(
            "experiments/quickstart.yaml", overrides + [f"run.dir={tmp_path / name}"]
        )
        runs.append(read_metrics(train(config, quiet=True).run_dir))
    strip = [[{k: v for k, v in m.items() if k not in TIMING} for m in run] for run in runs]
    assert strip[0] == strip[1]
    other = load_config(
        "experiments/quickstart.yaml",
        [o for o in tiny_overrides if not o.startswith("run.dir")]
        + [f"run.dir={tmp_path / 'c'}", "seed=2"],
    )
    changed = read_metrics(train(other, quiet=True).run_dir)
    assert [m["policy_loss"] for m in changed] != [m["policy_loss"] for m in runs[0]]


def test_wandb_offline_round_trip(tiny_overrides, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    extra = ["tracking.wandb.mode=offline", "eval.every=256", "eval.episodes=2"]
    extra += ["tracking.wandb.log_checkpoints=true", "run.checkpoint_every=256"]
    result = train(load_config("experiments/quickstart.yaml", tiny_overrides + extra), quiet=True)
    written = read_offline_run(result.run_dir)
    assert written["config"]["ppo"]["bptt_len"] == 8
    assert written["config"]["env"]["id"] == "recurrl/CartPoleNoVelocity-v0"
    history = written["history"]
    local = read_metrics(result.run_dir)
    assert [h["global_step"] for h in history] == [m["global_step"] for m in local]
    assert history[-1]["losses/value_loss"] == pytest.approx(local[-1]["value_loss"])
    assert history[-1]["rollout/episodic_return"] == pytest.approx(local[-1]["episodic_return"])
    assert "charts/sps" in history[-1]
    evaluated = [h for h in history if "eval/return_mean" in h]
    assert [h["global_step"] for h in evaluated] == [256, 512]
    assert evaluated[-1]["eval/return_mean"] == pytest.approx(local[-1]["eval_return_mean"])
    aliases = [set(a["aliases"]) - {"latest"} for a in written["artifacts"]]  # W&B adds latest
    assert aliases[0] == {"best"} and aliases[-1] == {"final"}  # the first evaluation is best
    assert [a for a in aliases if a != {"best"}] == [{"step-256"}, {"step-512"}, {"final"}]
    assert {a["type"] for a in written["artifacts"]} == {"model"}


def test_wandb_resumed_run_continues_the_same_run(tiny_overrides, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = load_config(
        "experiments/quickstart.yaml", tiny_overrides + ["tracking.wandb.mode=offline"]
    )
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        result = train(config, quiet=True)
    assert result.interrupted
    time.sleep(1)  # W&B names offline run folders by the second
    run_dir, payload = resume_checkpoint(result.run_dir)
    train(resume_config(run_dir, payload, []), quiet=True, resume=payload)
    first, second = read_offline_runs(run_dir)
    assert first["id"] == second["id"] == payload["training"]["wandb_id"]
    assert [h["global_step"] for h in first["history"]] == [128, 256]
    assert [h["global_step"] for h in second["history"]] == [384, 512]


def test_wandb_log_failures_do_not_stop_training(tiny_overrides, monkeypatch, capsys):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)

    def broken_log(self, *args, **kwargs):
        raise ConnectionError("wandb service gone")

    monkeypatch.setattr(wandb.Run, "log", broken_log)
    config = load_config(
        "experiments/quickstart.yaml", tiny_overrides + ["tracking.wandb.mode=offline"]
    )
    result = train(config, quiet=True)
    assert result.global_step == 512 and len(read_metrics(result.run_dir)) == 4
    err = capsys.readouterr().err
    assert err.count("W&B log failed (ConnectionError: wandb service gone)") == 1


def test_online_without_key_falls_back_to_offline(tiny_overrides, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    config = load_config(
        "experiments/quickstart.yaml", tiny_overrides + ["tracking.wandb.mode=online"]
    )
    result = train(config, quiet=True)
    assert "logging offline instead" in capsys.readouterr().err
    assert read_offline_run(result.run_dir)["history"]


def test_tensorboard_missing_is_a_clear_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    code = main(
        ["train", "experiments/quickstart.yaml", f"run.dir={tmp_path / 'run'}"]
        + ["tracking.tensorboard=true"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "tracking.tensorboard" in err and "pip install tensorboard" in err
    assert not (tmp_path / "run").exists()  # refused before anything started


def test_tensorboard_sink_gets_grouped_scalars(tiny_overrides, monkeypatch):
    written = []

    class SummaryWriter:
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, name, value, step):
            written.append((name, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    config = load_config(
        "experiments/quickstart.yaml",
        tiny_overrides + ["tracking.tensorboard=true", "eval.every=512", "eval.episodes=2"],
    )
    result = train(config, quiet=True)
    assert written[0] == ("dir", str(result.run_dir / "tensorboard"))
    names = {entry[0] for entry in written}
    assert {"losses/policy_loss", "rollout/episodic_return", "eval/return_mean"} <= names
    assert ("charts/update", 4, 512) in written and written[-1] == ("closed",)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_lines_otherwise():
    metrics = {"global_step": 256, "episodic_return": 21.5, "sps": 900.0, "approx_kl": 0.01}
    terminal = Terminal()
    bar = make_console(1024, quiet=False, stream=terminal)
    bar.on_update({**metrics, "eval_return_mean": 40.0})
    bar.on_update({**metrics, "global_step": 512})
    bar.on_end(None)
    text = terminal.getvalue()
    assert text.count("\r[") == 2 and "512/1,024 steps" in text and "eta " in text
    assert "return 21.5" in text and "eval 40.0" in text and text.endswith("\n")
    log = io.StringIO()
    make_console(1024, quiet=False, stream=log).on_update(metrics)
    assert log.getvalue().startswith("step       256/1,024  return     21.50")
    assert make_console(1024, quiet=True, stream=terminal) is None
    assert format_duration(75) == "1m15s" and format_duration(3725) == "1h02m"
