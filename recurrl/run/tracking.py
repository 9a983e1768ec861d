"""Where metrics go: ``metrics.jsonl``, and (when turned on) W&B and TensorBoard, each a
:class:`~recurrl.run.callbacks.Callback` (the console ones are in ``recurrl.run.progress``).

Every update logs one flat dict (``global_step``, ``episodic_return``, ``policy_loss``, ...,
and ``eval_return_mean`` ... on updates that evaluated). ``metrics.jsonl`` keeps the flat names;
W&B and TensorBoard get them grouped against ``global_step`` as the x-axis:
``rollout/episodic_return``, ``losses/policy_loss``, ``charts/sps``, ``eval/return_mean``
(the ``eval_`` prefix becomes the section); a key a callback adds with a ``/`` in it
(``custom/value``) keeps its name, any other goes under ``other/``.

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

from recurrl.config import Config, ConfigError, WandbConfig, to_dict
from recurrl.run.callbacks import Callback, RunInfo
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
    "rollout_s": "charts",
    "update_s": "charts",
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
    if "/" in key:
        return key
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


def cleaned(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics as JSON can hold them (NaN and inf as null)."""
    return {key: _clean(value) for key, value in metrics.items()}


class WandbSink(Callback):
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
        self.offline = mode == "offline" or getattr(self.run.settings, "mode", "") == "offline"
        self.log_checkpoints = config.log_checkpoints

    @property
    def wandb_id(self) -> str:
        return self.run.id

    def on_start(self, info: RunInfo) -> None:
        if self.offline:
            where = getattr(self.run.settings, "sync_dir", None) or info.run_dir / "wandb"
            info.notes.append(f"W&B offline: files in {where} (upload: wandb sync {where})")

    def _failed(self, what: str, error: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            print(
                f"recurrl: W&B {what} failed ({type(error).__name__}: {error}); training goes "
                f"on, metrics.jsonl has every update",
                file=sys.stderr,
            )

    def on_update(self, metrics: dict[str, Any]) -> None:
        metrics = cleaned(metrics)
        try:
            self.run.log({"global_step": metrics["global_step"], **grouped(metrics)})
        except Exception as error:
            self._failed("log", error)

    def on_checkpoint(self, path: Path, aliases: list[str], global_step: int) -> None:
        """Upload ``path`` as a new version of this run's ``checkpoints-<id>`` model artifact
        (with ``tracking.wandb.log_checkpoints``)."""
        if not self.log_checkpoints:
            return
        try:
            artifact = self.wandb.Artifact(
                f"checkpoints-{self.run.id}", type="model", metadata={"global_step": global_step}
            )
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=aliases)
        except Exception as error:
            self._failed("checkpoint upload", error)

    def on_end(self, result: Any) -> None:
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


class TensorBoardSink(Callback):
    """Scalars under ``run_dir/tensorboard`` (a resumed run adds an event file beside)."""

    def __init__(self, run_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def on_update(self, metrics: dict[str, Any]) -> None:
        step = metrics["global_step"]
        for name, value in grouped(cleaned(metrics)).items():
            if isinstance(value, int | float):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def on_end(self, result: Any) -> None:
        self.writer.close()


class MetricsFile(Callback):
    """Appends each update's metrics to ``run_dir/metrics.jsonl``, one JSON object a line."""

    def __init__(self, run_dir: Path) -> None:
        self.file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in on_end)

    def on_update(self, metrics: dict[str, Any]) -> None:
        self.file.write(json.dumps(cleaned(metrics)) + "\n")
        self.file.flush()

    def on_end(self, result: Any) -> None:
        self.file.close()


def make_sinks(
    config: Config,
    run_dir: Path,
    quiet: bool = False,
    wandb_id: str | None = None,
) -> list[Callback]:
    """Rank 0's sinks, in call order: ``metrics.jsonl``, W&B and TensorBoard when turned on,
    the console unless ``quiet``.

    Args:
        config: the resolved config.
        run_dir: the run folder.
        quiet: no console output.
        wandb_id: the W&B run id of the run being resumed, if any.
    """
    sinks: list[Callback] = [MetricsFile(run_dir)]
    tracking = config.tracking
    if tracking.wandb.mode != "disabled":
        sinks.append(WandbSink(tracking.wandb, run_dir, config.name, to_dict(config), wandb_id))
    if tracking.tensorboard:
        sinks.append(TensorBoardSink(run_dir))
    console = make_console(config.ppo.total_steps, quiet)
    return sinks + ([console] if console is not None else [])
