"""Learning curves from run folders (``recurrl plot RUN_DIR... --out curves.png``).

Runs are grouped by experiment ``name`` and env id (from each run's ``config.yaml``): the seeds
of one experiment on one env become one mean curve with a shaded band of one standard
deviation. Every env gets its own panel (two when runs evaluated: training and evaluation
return), so a 0-1 memory task is never drawn on CartPole's 0-500 axis. When more than one env
is drawn, returns are divided by each env's optimal return where ``recurrl envs`` knows it
(``normalize``). The env's optimum and its memoryless return, where known, are drawn as lines.

When the seeds of one group end at different steps, the mean is drawn where all of them have
data and each longer run alone beyond it, thin, with a warning naming the runs: a short test
run never cuts the curve of full runs without a word. matplotlib is optional (``pip install
'recurrl[plot]'``) and imported only here.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
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


@dataclass
class Panel:
    """One env's curves for one metric: ``{experiment name: [runs]}`` and the env's facts."""

    env_id: str
    metric: str
    groups: dict[str, list[Run]]
    optimum: float | None
    memoryless: float | None
    scale: float | None  # returns are divided by it (the optimum) when normalised


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


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (fewer at the start); same length."""
    if window <= 1 or len(y) == 0:
        return y
    sums = np.cumsum(np.concatenate([[0.0], y]))
    end = np.arange(1, len(y) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


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


def format_steps(value: float, _position: Any = None) -> str:
    """A tick label: 0, 500, 1k, 2.5k, 100k, 1M, 1.5M, 2B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _env_facts(env_id: str) -> tuple[float | None, float | None]:
    """``(optimal return, memoryless return)`` of ``env_id`` where ``recurrl envs`` knows them."""
    from recurrl import envs

    facts = envs.ENVIRONMENTS.get(env_id.split(":")[-1], {})
    return _number(facts.get("optimal_return")), _number(facts.get("memoryless_return"))


def panels_for(
    runs: list[Run], x_key: str, normalize: bool | None = None
) -> list[list[Panel | None]]:
    """Per env (sorted by id), one slot per metric that any run logged: its :class:`Panel`, or
    None where this env's runs did not log that metric.

    ``normalize=None`` normalises when more than one env is drawn. Only envs with a known
    positive optimum are normalised.
    """
    by_env: dict[str, list[Run]] = {}
    for run in runs:
        by_env.setdefault(run.env_id.split(":")[-1], []).append(run)
    normalize = len(by_env) > 1 if normalize is None else normalize
    logged = [m for m in METRICS if any(curve(r.records, m, x_key)[0].size for r in runs)]
    blocks = []
    for env_id, members in sorted(by_env.items()):
        optimum, memoryless = _env_facts(env_id)
        scale = optimum if normalize and optimum is not None and optimum > 0 else None
        groups: dict[str, list[Run]] = {}
        for run in members:
            groups.setdefault(run.name, []).append(run)
        block: list[Panel | None] = []
        for metric in logged:
            has_data = any(curve(r.records, metric, x_key)[0].size for r in members)
            block.append(
                Panel(env_id, metric, groups, optimum, memoryless, scale) if has_data else None
            )
        blocks.append(block)
    return blocks


def draw_runs(
    runs: list[Run],
    x: str = "steps",
    smoothing: int = 1,
    normalize: bool | None = None,
    warn: Callable[[str], None] | None = None,
):
    """A matplotlib ``Figure`` of ``runs``: per env a panel for the training return and, when
    runs evaluated, one for the evaluation return (see the module docstring).

    Args:
        runs: from :func:`find_runs`.
        x: ``"steps"`` (env steps) or ``"wall"`` (seconds).
        smoothing: moving-average window over each run's points before averaging (1: none).
        normalize: divide returns by the env's optimum; None: when more than one env is drawn.
        warn: called with each warning (runs of one group that end at different x; one per
            group, from its first panel); default: print to stderr.
    """
    if x not in X_AXES:
        raise PlotError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    if smoothing < 1:
        raise PlotError(f"--smooth must be >= 1, got {smoothing}")
    warn = warn or (lambda text: print(f"recurrl: warning: {text}", file=sys.stderr))
    warned: set[tuple[str, str]] = set()

    def warn_once(group: tuple[str, str], text: str) -> None:  # per group, not per panel
        if group not in warned:
            warned.add(group)
            warn(text)

    x_key, x_label = X_AXES[x]
    blocks = panels_for(runs, x_key, normalize)
    if not blocks or not blocks[0]:
        raise PlotError("the runs logged no returns yet (no episode finished)")
    per_row = 1 if len(blocks) == 1 else 2 if len(blocks[0]) == 2 else min(len(blocks), 3)
    rows, columns = math.ceil(len(blocks) / per_row), per_row * len(blocks[0])
    plt = _pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    slots = [panel for block in blocks for panel in block]
    for axis, panel in zip(axes.flat, slots, strict=False):
        if panel is None:
            axis.axis("off")
            axis.text(0.5, 0.5, "not evaluated", ha="center", va="center", color="gray")
            continue
        _draw_panel(axis, panel, x_key, smoothing, warn_once)
        axis.set_xlabel(x_label)
        if x == "steps":
            axis.xaxis.set_major_formatter(format_steps)
    for axis in list(axes.flat)[len(slots) :]:
        axis.remove()
    figure.tight_layout()
    return figure


def _draw_panel(axis, panel: Panel, x_key: str, smoothing: int, warn) -> None:
    scale = panel.scale or 1.0
    for index, (name, members) in enumerate(sorted(panel.groups.items())):
        curves = [curve(r.records, panel.metric, x_key) for r in members]
        curves = [(cx, smooth(cy, smoothing) / scale) for cx, cy in curves]
        drawn = [(run, c) for run, c in zip(members, curves, strict=True) if len(c[0])]
        if drawn:
            where = f"{name} on {panel.env_id or 'an unknown env'}, {METRICS[panel.metric]}"
            warn_group = partial(warn, (name, panel.env_id))
            _draw_group(axis, drawn, name, f"C{index % 10}", where, warn_group)
    for value, text, style in (
        (panel.optimum, "optimum", "--"),
        (panel.memoryless, "memoryless", ":"),
    ):
        if value is None:
            continue
        axis.axhline(value / scale, color="gray", linestyle=style, linewidth=1)
        axis.annotate(
            text,
            (0, value / scale),
            xycoords=("axes fraction", "data"),
            xytext=(3, 2),
            textcoords="offset points",
            fontsize="x-small",
            color="gray",
        )
    title = f"{panel.env_id or '(env unknown)'}: {METRICS[panel.metric]}"
    if panel.scale is not None:
        title += f"\n(normalised by optimum {panel.scale:g})"
    axis.set_title(title, fontsize="medium")
    axis.set_ylabel("return / optimum" if panel.scale is not None else "return")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")


def _draw_group(axis, drawn: list, name: str, color: str, where: str, warn) -> None:
    """One experiment's runs: their mean ± std where all have data; a run that ends before
    another starts is drawn alone, and the part of a run past the others' end too (thin)."""
    drawn = sorted(drawn, key=lambda item: item[1][0][-1])  # by the x where each run ends
    alone = []
    while len(drawn) > 1 and max(c[0][0] for _, c in drawn) > drawn[0][1][0][-1]:
        alone.append(drawn.pop(0))  # ends before another run starts: no x in common
    grid, mean, std = mean_band([c for _, c in drawn])
    seeds = len(drawn)
    axis.plot(grid, mean, color=color, label=f"{name} ({seeds} run{'s' * (seeds > 1)})")
    axis.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
    longer = [(cx[cx >= grid[-1]], cy[cx >= grid[-1]]) for _, (cx, cy) in drawn]
    for cx, cy in longer:
        if len(cx) > 1:
            axis.plot(cx, cy, color=color, linewidth=0.8, alpha=0.6)
    for run, (cx, cy) in alone:
        label = f"{name}: {run.path.name} alone"
        axis.plot(cx, cy, color=color, linewidth=0.8, alpha=0.6, marker=".", label=label)
    if alone or any(len(cx) > 1 for cx, _ in longer):
        ends = ", ".join(f"{run.path} ({format_steps(c[0][-1])})" for run, c in alone + drawn)
        warn(
            f"{where}: runs end at different points: {ends}; the curve is the mean of "
            f"{seeds} run{'s' * (seeds > 1)} up to {format_steps(grid[-1])}; thin lines are "
            f"single runs past that point{' or with no point in common' * bool(alone)}"
        )


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


def plot_runs(
    paths: list[str | Path],
    out: str | Path,
    x: str = "steps",
    smoothing: int = 1,
    normalize: bool | None = None,
) -> Path:
    """Draw the learning curves of the runs under ``paths`` into ``out`` (PNG, PDF, SVG).

    See :func:`draw_runs` for the arguments; warnings go to stderr.
    """
    figure = draw_runs(find_runs(paths), x, smoothing, normalize)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    _pyplot().close(figure)
    return out
