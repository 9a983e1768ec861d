"""Learning curves from run folders (``recurrl plot RUN_DIR... --out curves.png``).

Runs that share an experiment ``name`` (seeds of one experiment) are drawn as their mean with a
shaded band of one standard deviation, against env steps or wall-clock seconds. One panel per
metric: the training return and, when runs evaluated, the evaluation return. matplotlib is
optional (``pip install 'recurrl[plot]'``) and imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recurrl.run.run_dir import read_metrics

METRICS = {"episodic_return": "training return", "eval_return_mean": "evaluation return"}
X_AXES = {"steps": ("global_step", "env steps"), "wall": ("time_s", "wall-clock seconds")}


class PlotError(RuntimeError):
    """No runs to plot, or matplotlib is missing."""


@dataclass
class Run:
    """One run folder's name, env and metrics records."""

    path: Path
    name: str
    env_id: str
    records: list[dict[str, Any]]


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run folders among ``paths`` (a folder of runs, e.g. a suite's, is searched)."""
    runs = []
    for path in map(Path, paths):
        found = [path] if (path / "metrics.jsonl").is_file() else []
        found = found or sorted(p.parent for p in path.glob("**/metrics.jsonl"))
        if not found:
            raise PlotError(f"{path}: no metrics.jsonl in it or below it")
        for run_dir in found:
            config_path = run_dir / "config.yaml"
            config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
            name = config.get("name", run_dir.name)
            env_id = config.get("env", {}).get("id", "")
            runs.append(Run(run_dir, name, env_id, read_metrics(run_dir)))
    return runs


def curve(records: list[dict], metric: str, x_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` over the records that hold ``metric``."""
    points = [(r[x_key], r[metric]) for r in records if r.get(metric) is not None]
    if not points:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*points, strict=True)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def mean_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """``(x, mean, std)`` of curves interpolated onto their common x range."""
    curves = [(x, y) for x, y in curves if len(x)]
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, np.zeros_like(y)
    low, high = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[(x >= low) & (x <= high)] for x, _ in curves]))
    values = np.stack([np.interp(grid, x, y) for x, y in curves])  # (runs, points)
    return grid, values.mean(0), values.std(0)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError(
            "plotting needs matplotlib: pip install matplotlib (or pip install 'recurrl[plot]')"
        ) from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _optimum(runs: list[Run]) -> float | None:
    from recurrl import envs

    env_ids = {run.env_id.split(":")[-1] for run in runs}
    if len(env_ids) != 1:
        return None
    return envs.ENVIRONMENTS.get(env_ids.pop(), {}).get("optimal_return")


def plot_runs(paths: list[str | Path], out: str | Path, x: str = "steps") -> Path:
    """Draw the learning curves of the runs under ``paths`` into ``out`` (PNG, PDF, SVG)."""
    if x not in X_AXES:
        raise PlotError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    x_key, x_label = X_AXES[x]
    runs = find_runs(paths)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    metrics = [m for m in METRICS if any(curve(r.records, m, x_key)[0].size for r in runs)]
    if not metrics:
        raise PlotError("the runs logged no returns yet (no episode finished)")
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    optimum = _optimum(runs)
    for axis, metric in zip(axes[0], metrics, strict=True):
        for index, (name, members) in enumerate(sorted(groups.items())):
            curves = [curve(r.records, metric, x_key) for r in members]
            if not any(len(c[0]) for c in curves):
                continue
            grid, mean, std = mean_band(curves)
            seeds = sum(1 for c in curves if len(c[0]))
            color = f"C{index % 10}"  # one color per experiment in every panel
            label = f"{name} ({seeds} run{'s' * (seeds > 1)})"
            axis.plot(grid, mean, color=color, label=label)
            axis.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
        if optimum is not None:
            axis.axhline(optimum, color="gray", linestyle="--", linewidth=1, label="optimum")
        axis.set_xlabel(x_label)
        axis.set_ylabel(METRICS[metric])
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
