"""The probe's report: ``horizon.png``, ``drift.png`` and ``state_probe.png`` (with matplotlib),
and the few lines ``recurrl probe`` prints, both from the summary
:func:`~recurrl.app.probe.probe_run` writes.
"""

from __future__ import annotations

import math
from pathlib import Path


def plots(summary: dict, out: Path) -> list[str]:
    """``horizon.png`` (log y), ``drift.png`` and ``state_probe.png`` when matplotlib is
    installed; returns the paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = [_plot_horizon(plt, summary, out)]
    drift = summary["drift"]
    if drift is not None and drift["after_epochs"] and None not in drift["after_epochs"]:
        written.append(_plot_drift(plt, summary, out))
    if "accuracy" in summary["state_probe"]:
        written.append(_plot_state_probe(plt, summary, out))
    return written


def _plot_horizon(plt, summary: dict, out: Path) -> str:
    """``horizon.png``: the action and value gradient norms over lags, log y."""
    horizon = summary["horizon"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("action", "value"):
        points = [(k, v) for k, v in zip(horizon["lags"], horizon[name], strict=True) if v]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("lag k (steps back)")
    ax.set_ylabel("|d output(t) / d obs(t - k)|")
    ax.set_title(f"{summary['env_id']}: memory horizon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "horizon.png", dpi=100)
    plt.close(fig)
    return str(out / "horizon.png")


def _plot_drift(plt, summary: dict, out: Path) -> str:
    """``drift.png``: the start-state drift with the same parameters, then after each epoch."""
    drift = summary["drift"]
    fig, ax = plt.subplots(figsize=(6, 4))
    values = [drift["same_parameters"], *drift["after_epochs"]]
    ax.plot(range(len(values)), values, marker="o")
    ax.set_xlabel("PPO epochs on the rollout")
    ax.set_ylabel("relative drift of chunk-start states")
    ax.set_title(f"{summary['env_id']}: stale start states")
    fig.tight_layout()
    fig.savefig(out / "drift.png", dpi=100)
    plt.close(fig)
    return str(out / "drift.png")


def _plot_state_probe(plt, summary: dict, out: Path) -> str:
    """``state_probe.png``: the held-out probe accuracy and chance per age bucket."""
    memory = summary["state_probe"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style, label in (
        ("accuracy", "o-", "linear probe (held out)"),
        ("chance", "--", "chance (majority class)"),
    ):
        values = [math.nan if v is None else v for v in memory[name]]  # gaps, no sample
        ax.plot(memory["ages"], values, style, label=label)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("steps since memory_target was shown (first age of the bucket)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{summary['env_id']}: decoding memory_target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "state_probe.png", dpi=100)
    plt.close(fig)
    return str(out / "state_probe.png")


def _number(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"
    )


def format_summary(summary: dict) -> str:
    """The few lines ``recurrl probe`` prints."""
    horizon = summary["horizon"]
    lines = [f"{summary['env_id']} ({summary['core']} core), {summary['steps']} greedy steps"]
    shown = sorted({0, 1, 2, 4, 8, 16, 32, 64, len(horizon["lags"]) - 1})
    shown = [k for k in shown if k < len(horizon["lags"])]
    lines.append("lag      " + " ".join(f"{k:>8}" for k in shown))
    for name in ("action", "value"):
        lines.append(f"{name:<8} " + " ".join(f"{_number(horizon[name][k]):>8}" for k in shown))
    for name in ("action", "value"):
        h = horizon[f"{name}_horizon"]
        lines.append(
            f"{name} gradient: first below 1% of lag 0 at lag {h['first_below']}, "
            f"last at or above it at lag {h['last_above']}"
        )
    drift = summary["drift"]
    if drift is not None:
        epochs = ", ".join(_number(v) for v in drift["after_epochs"])
        lines.append(
            f"start-state drift: {_number(drift['same_parameters'])} with the same parameters; "
            f"after 1..{len(drift['after_epochs'])} PPO epochs: {epochs}"
        )
    lines += _format_state_probe(summary["state_probe"])
    for image in summary.get("images", []):
        lines.append(f"wrote {image}")
    return "\n".join(lines)


def _format_state_probe(memory: dict) -> list[str]:
    """The state probe's lines: what it read, then accuracy and chance at a few ages."""
    if "skipped" in memory:
        return [f"state probe: skipped ({memory['skipped']})"]
    lines = [
        f"state probe: linear decoding of memory_target from the {memory['features']}, "
        f"{memory['feature_size']} features; {memory['train_episodes']} training / "
        f"{memory['test_episodes']} held-out episodes"
    ]
    ages = memory["ages"]  # each age to 31, then buckets doubling in width: show every bucket
    last = len(ages) - 1
    shown = [
        i for i, age in enumerate(ages) if age in (0, 1, 2, 4, 8, 16) or age >= 31 or i == last
    ]
    labels = [
        str(memory["ages"][i])
        if memory["ages"][i] == memory["age_max"][i]
        else f"{memory['ages'][i]}-{memory['age_max'][i]}"
        for i in shown
    ]
    lines.append("age      " + " ".join(f"{label:>8}" for label in labels))
    for name in ("accuracy", "chance"):
        lines.append(f"{name:<8} " + " ".join(f"{_number(memory[name][i]):>8}" for i in shown))
    return lines
