"""Where metrics go: the console, ``metrics.jsonl``, and (when turned on) W&B and TensorBoard.

Every update logs one flat dict (``global_step``, ``episodic_return``, ``policy_loss``, ...,
and ``eval_return_mean`` ... on updates that evaluated). ``metrics.jsonl`` keeps the flat names;
W&B and TensorBoard get them grouped against ``global_step`` as the x-axis:
``rollout/episodic_return``, ``losses/policy_loss``, ``charts/sps``, ``eval/return_mean``
(the ``eval_`` prefix becomes the section).

W&B and TensorBoard are imported only when turned on. Neither a missing W&B key, a network
that is down, nor a W&B call that fails later stops training: ``metrics.jsonl`` has every update.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from recurrl.config import ConfigError, TrackingConfig, WandbConfig
from recurrl.run.progress import make_console

SECTIONS = {
    "episodic_return": "rollout",
    "episodic_length": "rollout",
    "episodes": "rollout",
    "nonfinite_steps": "rollout",
    "policy_loss": "losses",
    "value_loss": "losses",
    "entropy": "losses",
    "approx_kl": "losses",
    "clipfrac": "losses",
    "explained_variance": "losses",
    "epochs": "losses",
    "sps": "charts",
    "learning_rate": "charts",
    "time_s": "charts",
    "update": "charts",
}

TENSORBOARD_HINT = (
    "tracking.tensorboard: true needs the tensorboard package: pip install tensorboard "
    "(or pip install 'recurrl[tb]'), or set tracking.tensorboard=false"
)


def pooled_metrics(ranks: list[dict[str, Any]], skip_nonfinite: bool) -> dict[str, Any]:
    """One update's rollout and loss metrics from every rank's part.

    Args:
        ranks: per rank, ``returns`` and ``lengths`` (its finished episodes), ``skipped`` (its
            masked non-finite steps) and ``stats`` (its update's losses, ``epochs``).
        skip_nonfinite: ``env.skip_nonfinite`` (then ``nonfinite_steps`` is logged).

    Returns:
        Episodes pooled over the ranks, losses averaged (ignoring NaN), ``epochs`` rank 0's.
    """
    returns = [value for part in ranks for value in part["returns"]]
    lengths = [value for part in ranks for value in part["lengths"]]
    metrics = {
        "episodic_return": _mean(returns),
        "episodic_length": _mean(lengths),
        "episodes": len(returns),
    }
    if skip_nonfinite:
        metrics["nonfinite_steps"] = sum(part["skipped"] for part in ranks)
    for key in ranks[0]["stats"]:
        metrics[key] = _average([part["stats"][key] for part in ranks])
    metrics["epochs"] = ranks[0]["stats"]["epochs"]  # the same on every rank
    return metrics


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def _average(values: list[float]) -> float:
    """The mean of the ranks' values, ignoring NaN (one rank: its value)."""
    if len(values) == 1:
        return values[0]
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def metric_name(key: str) -> str:
    """The grouped name of a flat metric: ``policy_loss`` -> ``losses/policy_loss``."""
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_") :]
    return f"{SECTIONS.get(key, 'other')}/{key}"


def grouped(metrics: dict[str, Any]) -> dict[str, Any]:
    """Grouped names for every logged value except ``global_step`` and missing ones."""
    return {
        metric_name(key): value
        for key, value in metrics.items()
        if key != "global_step" and value is not None
    }


def _clean(value: Any) -> Any:
    """JSON has no NaN: a missing mean (no episode finished) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class WandbSink:
    """A W&B run. Never crashes or hangs the training run for want of a key or a network.

    Args:
        config: ``tracking.wandb.*``.
        run_dir: the run folder (W&B writes its files under ``run_dir/wandb``).
        name: the experiment name (the default W&B run name).
        resolved: the resolved config, logged as the W&B config.
        run_id: continue this W&B run (a resumed training run), else start a new one.
    """

    def __init__(
        self,
        config: WandbConfig,
        run_dir: Path,
        name: str,
        resolved: dict,
        run_id: str | None = None,
    ) -> None:
        import wandb  # only imported when turned on

        self.wandb = wandb
        self.failures = 0
        mode = config.mode
        if mode == "online" and not _has_wandb_key(wandb):
            print(
                "recurrl: no W&B API key found (run `wandb login` or set WANDB_API_KEY); "
                "logging offline instead, sync later with `wandb sync`",
                file=sys.stderr,
            )
            mode = "offline"
        options = {
            "project": config.project,
            "entity": config.entity,
            "group": config.group,
            "tags": config.tags or None,
            "name": config.name or name,
            "notes": config.notes,
            "config": resolved,
            "dir": str(run_dir),
            "id": run_id,
            "resume": "allow" if run_id else None,
            "settings": wandb.Settings(init_timeout=60, silent=True),
        }
        try:
            self.run = wandb.init(mode=mode, **options)
        except Exception as error:  # network down, server refusing: keep training, log offline
            if mode == "offline":
                raise
            print(
                f"recurrl: W&B init failed ({type(error).__name__}: {error}); logging offline",
                file=sys.stderr,
            )
            self.run = wandb.init(mode="offline", **options)
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    @property
    def run_id(self) -> str:
        return self.run.id

    def _failed(self, what: str, error: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            print(
                f"recurrl: W&B {what} failed ({type(error).__name__}: {error}); training goes "
                f"on, metrics.jsonl has every update",
                file=sys.stderr,
            )

    def log(self, metrics: dict[str, Any]) -> None:
        try:
            self.run.log({"global_step": metrics["global_step"], **grouped(metrics)})
        except Exception as error:
            self._failed("log", error)

    def log_checkpoint(self, path: Path, aliases: list[str], global_step: int) -> None:
        """Upload ``path`` as a new version of this run's ``checkpoints-<id>`` model artifact."""
        try:
            artifact = self.wandb.Artifact(
                f"checkpoints-{self.run.id}", type="model", metadata={"global_step": global_step}
            )
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=aliases)
        except Exception as error:
            self._failed("checkpoint upload", error)

    def close(self) -> None:
        try:
            self.run.finish()
        except Exception as error:
            self._failed("finish", error)


def _has_wandb_key(wandb) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(wandb.Api(timeout=5).api_key)
    except Exception:  # no netrc, no settings: no key
        return False


def require_tensorboard() -> None:
    """Raise ConfigError naming ``tracking.tensorboard`` when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(TENSORBOARD_HINT) from None


class TensorBoardSink:
    """Scalars under ``run_dir/tensorboard`` (a resumed run adds an event file beside)."""

    def __init__(self, run_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, Any]) -> None:
        step = metrics["global_step"]
        for name, value in grouped(metrics).items():
            if isinstance(value, int | float):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullTracker:
    """The tracker of every rank but 0 in data-parallel training: logs nothing."""

    wandb_id: str | None = None

    def log(self, metrics: dict[str, Any]) -> None:
        """Nothing: rank 0 logs the metrics reduced over all ranks."""

    def log_checkpoint(self, path: Path, aliases: list[str], global_step: int) -> None:
        """Nothing: rank 0 writes and uploads checkpoints."""

    def close(self) -> None:
        """Nothing to close."""


class Tracker:
    """Fans every update's metrics out to the console, ``metrics.jsonl``, W&B and TensorBoard.

    Args:
        run_dir: the run folder.
        name: the experiment name.
        resolved_config: the resolved config (W&B config).
        tracking: ``tracking.*``.
        total_steps: ``ppo.total_steps`` (for the progress display).
        quiet: no console output.
        wandb_id: the W&B run id of the run being resumed, if any.
        start_step: the step a resumed run starts from.
    """

    def __init__(
        self,
        run_dir: Path,
        name: str,
        resolved_config: dict,
        tracking: TrackingConfig,
        total_steps: int,
        quiet: bool = False,
        wandb_id: str | None = None,
        start_step: int = 0,
    ) -> None:
        self.wandb_id = wandb_id
        self.log_checkpoints = tracking.wandb.log_checkpoints
        self.tensorboard = TensorBoardSink(run_dir) if tracking.tensorboard else None
        self.wandb = None
        if tracking.wandb.mode != "disabled":
            self.wandb = WandbSink(tracking.wandb, run_dir, name, resolved_config, wandb_id)
            self.wandb_id = self.wandb.run_id
        self.metrics_file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close)
        self.console = make_console(total_steps, quiet, start_step)

    def log(self, metrics: dict[str, Any]) -> None:
        metrics = {key: _clean(value) for key, value in metrics.items()}
        self.metrics_file.write(json.dumps(metrics) + "\n")
        self.metrics_file.flush()
        for sink in (self.wandb, self.tensorboard):
            if sink is not None:
                sink.log(metrics)
        if self.console is not None:
            self.console.update(metrics)

    def log_checkpoint(self, path: Path, aliases: list[str], global_step: int) -> None:
        """Upload a checkpoint to W&B when ``tracking.wandb.log_checkpoints`` is on."""
        if self.wandb is not None and self.log_checkpoints:
            self.wandb.log_checkpoint(path, aliases, global_step)

    def close(self) -> None:
        if self.console is not None:
            self.console.close()
        self.metrics_file.close()
        for sink in (self.wandb, self.tensorboard):
            if sink is not None:
                sink.close()
