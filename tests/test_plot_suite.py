"""Learning-curve plots, benchmark suites, and the W&B sweep examples."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from recurrl.app.cli import main
from recurrl.app.plot import PlotError, find_runs, mean_band, plot_runs
from recurrl.app.suite import load_suite, plan_jobs, run_suite
from recurrl.config import load_config
from recurrl.run.checkpoints import load_checkpoint

PNG = b"\x89PNG"


def fake_run(path: Path, name: str, seed: int, updates: int = 8, evaluate: bool = True) -> Path:
    """A run folder as training leaves it (config.yaml, metrics.jsonl), written directly."""
    path.mkdir(parents=True)
    config = {"name": name, "seed": seed, "env": {"id": "recurrl/CartPoleNoVelocity-v0"}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for update in range(1, updates + 1):
        record = {"global_step": 128 * update, "episodic_return": 20.0 * update + seed}
        record["time_s"] = 0.5 * update * seed
        if evaluate and update % 2 == 0:
            record["eval_return_mean"] = 30.0 * update - seed
        lines.append(json.dumps(record))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_plot_groups_seeds_by_name(tmp_path, capsys):
    for seed in (1, 2, 3):
        fake_run(tmp_path / "runs" / f"lstm-{seed}", "lstm", seed)
    fake_run(tmp_path / "runs" / "mlp-1", "mlp", 1, updates=5, evaluate=False)
    runs = find_runs([tmp_path / "runs"])  # a parent folder is searched
    assert sorted(r.name for r in runs) == ["lstm", "lstm", "lstm", "mlp"]
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == PNG and f"wrote {out}" in capsys.readouterr().out
    wall = plot_runs([tmp_path / "runs" / "lstm-1", tmp_path / "runs" / "lstm-2"], out, x="wall")
    assert wall.read_bytes()[:4] == PNG


def test_mean_band_over_the_common_range():
    curves = [(np.array([1.0, 2, 3]), np.array([1.0, 2, 3]))]
    curves.append((np.array([1.0, 3]), np.array([3.0, 5])))  # interpolated at 2 -> 4
    x, mean, std = mean_band(curves)
    np.testing.assert_allclose(x, [1, 2, 3])
    np.testing.assert_allclose(mean, [2, 3, 4])
    np.testing.assert_allclose(std, [1, 1, 1])


def test_plot_errors_are_clear(tmp_path, monkeypatch, capsys):
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    fake_run(tmp_path / "run", "lstm", 1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(PlotError, match=r"pip install matplotlib .*recurrl\[plot\]"):
        plot_runs([tmp_path / "run"], tmp_path / "c.png")


def test_memory_suite_lists_the_cartpole_and_memory_env_experiments():
    name, experiments = load_suite("experiments/suites/memory.yaml")
    configs = [load_config(path, overrides) for path, overrides in experiments]
    names = [config.name for config in configs]
    assert name == "memory"
    assert names[:3] == [
        "cartpole_novelocity_lstm",
        "cartpole_novelocity_gru",
        "cartpole_novelocity_mlp",
    ]
    assert {"tmaze_lstm", "tmaze_gru"} <= set(names)
    assert len(set(names)) == len(names)


TINY = [
    "env.num_envs=4",
    "ppo.total_steps=256",
    "ppo.rollout_len=32",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=1",
    "policy.hidden_size=8",
    "policy.encoder_sizes=[8]",
    "eval.every=128",
    "eval.episodes=2",
    "device=cpu",
]


@pytest.mark.slow  # whole training runs
def test_suite_runs_every_seed_then_reports(tmp_path, capsys):
    experiments = Path("experiments").resolve()
    suite = tmp_path / "tiny.yaml"
    entries = [str(experiments / "cartpole_novelocity_lstm.yaml")]
    entries.append({"config": str(experiments / "cartpole_novelocity_mlp.yaml")})
    suite.write_text(yaml.safe_dump({"name": "tiny", "overrides": TINY, "experiments": entries}))
    out = tmp_path / "out"
    assert main(["suite", str(suite), "--seeds", "2", "--jobs", "2", "--out", str(out)]) == 0
    assert "[4/4]" in capsys.readouterr().out
    for name in ("cartpole_novelocity_lstm", "cartpole_novelocity_mlp"):
        for seed in (1, 2):
            assert (out / name / f"seed{seed}" / "checkpoints" / "final.pt").is_file()
            assert (out / "logs" / f"{name}-seed{seed}.log").is_file()
    results = (out / "results.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| cartpole")]
    assert len(rows) == 2 and all(row.count("±") == 5 for row in rows), results
    assert (out / "curves.png").read_bytes()[:4] == PNG
    # Running it again finds every run finished and only rewrites the report.
    _, jobs = run_suite(suite, 2, 2, out)
    assert jobs == [] and (out / "results.md").read_text() == results


@pytest.mark.slow  # whole training runs
def test_stopping_a_suite_checkpoints_every_run_and_continues(tmp_path):
    suite = tmp_path / "long.yaml"
    lstm = str(Path("experiments/cartpole_novelocity_lstm.yaml").resolve())
    overrides = [*TINY, "ppo.total_steps=10000000", "eval.every=0"]
    suite.write_text(
        yaml.safe_dump({"name": "long", "overrides": overrides, "experiments": [lstm]})
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "recurrl", "suite", str(suite), "--seeds", "2", "--jobs", "2"]
    process = subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    logs = [out / "cartpole_novelocity_lstm" / f"seed{s}" / "metrics.jsonl" for s in (1, 2)]
    deadline = time.monotonic() + 120
    while not all(log.is_file() and "\n" in log.read_text() for log in logs):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and f"--jobs 2 --out {out}" in err, err
    for log in logs:
        assert load_checkpoint(log.parent / "checkpoints" / "latest.pt")["global_step"] > 0
    jobs = plan_jobs(suite, 2, out, ["ppo.total_steps=512"])
    assert [job.command[-3:] for job in jobs] == [
        ["--resume", str(log.parent), "ppo.total_steps=512"] for log in logs
    ]


def sweep_args(sweep: dict) -> list[str]:
    """The ``--key=value`` arguments a ``wandb agent`` would pass (first value of each)."""
    args = []
    for key, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec["min"]
        args.append(f"--{key}={value}")
    return args


@pytest.mark.parametrize("path", sorted(Path("experiments/sweeps").glob("*.yaml")))
def test_sweep_commands_are_accepted_by_recurrl_train(path, tmp_path, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "recurrl" and sweep["metric"]["name"] == "eval/return_mean"
    command = sweep["command"]
    assert command[:2] == ["recurrl", "train"] and command[-1] == "${args}"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # tests never go online
    args = [a for a in command[1:-1] if not a.startswith("tracking.wandb.mode")]
    args += [f"run.dir={tmp_path / 'run'}", "ppo.total_steps=64", "env.num_envs=2"]
    args += ["ppo.rollout_len=32", "ppo.num_minibatches=1", "eval.every=64", "eval.episodes=1"]
    assert main(args + sweep_args(sweep)) == 0
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    for key, spec in sweep["parameters"].items():
        node = resolved
        for part in key.split("."):
            node = node[part]
        assert node == (spec["values"][0] if "values" in spec else spec["min"])
