"""Benchmarks are scripts, not timed tests: this only checks they run and write their JSON."""

from __future__ import annotations

import json

import pytest

from recurrl.app.cli import main


@pytest.mark.slow  # whole training runs
def test_bench_train_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "train", "--steps", "1024", "--scaling", "8", "--no-sb3", "--out", str(out)]
    args += ["--learning-steps", "2048", "--learning-seeds", "1,2"]
    assert main(args) == 0
    written = json.loads(out.read_text())
    assert written["machine"]["cores"] >= 1
    native, sync = written["comparison"]  # the env's batched version, then SyncVectorEnv
    assert [native["library"], sync["library"]] == ["recurrl", "recurrl/sync"]
    assert all(row["sps"] > 0 and row["peak_rss_mb"] > 0 for row in (native, sync))
    assert [r["num_envs"] for r in written["scaling"]] == [8]
    assert [(r["library"], r["seed"]) for r in written["learning"]] == [
        ("recurrl", 1),
        ("recurrl", 2),
    ]
    assert "SPS" in capsys.readouterr().out
