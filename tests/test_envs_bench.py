"""The environment benchmark script runs end to end and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from recurrl.app.bench import envs as bench


def test_bench_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--envs", "TMaze,MemoryGrid", "--sizes", "1,16", "--sync-envs", "4"]
    assert bench.main([*argv, "--seconds", "0.02", "--all-cores", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "numpy", "gymnasium"} <= data["machine"].keys()
    assert [row["env"] for row in data["results"]] == ["recurrl/TMaze-v0", "recurrl/MemoryGrid-v0"]
    for row in data["results"]:
        assert set(row["native"]) == {"1", "16"} and min(row["native"].values()) > 0
        assert row["sync_num_envs"] == 4 and row["sync"] > 0
    assert "TMaze" in capsys.readouterr().out


def test_bench_covers_the_suite() -> None:
    assert set(bench.SUITE) == {
        "TMaze",
        "CueRecall",
        "RepeatPrevious",
        "SequenceRecall",
        "MemoryGrid",
        "Bandit",
        "PointRecall",
        "CartPoleNoVelocity",
    }
