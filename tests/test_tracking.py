"""metrics.jsonl and W&B (offline, read back from its own files), determinism of a run."""

from __future__ import annotations

import json

import pytest

from recurrl.config import load_config
from recurrl.train import train
from tests.wandb_files import read_offline_run

TIMING = {"sps", "time_s"}


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


@pytest.mark.parametrize("mode", ["offline"])
def test_wandb_offline_round_trip(tiny_overrides, mode, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = load_config(
        "experiments/quickstart.yaml", tiny_overrides + [f"tracking.wandb.mode={mode}"]
    )
    result = train(config, quiet=True)
    written = read_offline_run(result.run_dir)
    assert written["config"]["ppo"]["bptt_len"] == 8
    assert written["config"]["env"]["id"] == "recurrl/CartPoleNoVelocity-v0"
    history = written["history"]
    local = read_metrics(result.run_dir)
    assert [h["global_step"] for h in history] == [m["global_step"] for m in local]
    assert history[-1]["losses/value_loss"] == pytest.approx(local[-1]["value_loss"])
    assert history[-1]["rollout/episodic_return"] == pytest.approx(local[-1]["episodic_return"])
    assert "charts/sps" in history[-1]


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
