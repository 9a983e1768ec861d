"""Where metrics go: the console, ``metrics.jsonl`` and (when turned on) Weights & Biases.

Every update logs one flat dict (``global_step``, ``episodic_return``, ``policy_loss``, ...).
``metrics.jsonl`` keeps the flat names; W&B gets them grouped (``rollout/episodic_return``,
``losses/policy_loss``, ``charts/sps``) against ``global_step`` as the x-axis.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from recurrl.config import WandbConfig

WANDB_SECTIONS = {
    "episodic_return": "rollout",
    "episodic_length": "rollout",
    "episodes": "rollout",
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


def _clean(value: Any) -> Any:
    """JSON has no NaN: a missing mean (no episode finished) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class WandbSink:
    """A W&B run. Never crashes or hangs the training run for want of a key or a network."""

    def __init__(self, config: WandbConfig, run_dir: Path, name: str, resolved: dict) -> None:
        import wandb  # only imported when turned on

        mode = config.mode
        if mode == "online" and not _has_wandb_key(wandb):
            print(
                "recurrl: no W&B API key found (run `wandb login` or set WANDB_API_KEY); "
                "logging offline instead, sync later with `wandb sync`",
                file=sys.stderr,
            )
            mode = "offline"
        self.wandb = wandb
        options = {
            "project": config.project,
            "entity": config.entity,
            "group": config.group,
            "tags": config.tags or None,
            "name": config.name or name,
            "notes": config.notes,
            "config": resolved,
            "dir": str(run_dir),
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

    def log(self, metrics: dict[str, Any]) -> None:
        grouped = {"global_step": metrics["global_step"]}
        for key, value in metrics.items():
            if key != "global_step" and value is not None:
                grouped[f"{WANDB_SECTIONS.get(key, 'other')}/{key}"] = value
        self.run.log(grouped)

    def close(self) -> None:
        self.run.finish()


def _has_wandb_key(wandb) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(wandb.Api(timeout=5).api_key)
    except Exception:  # no netrc, no settings: no key
        return False


class Tracker:
    """Fans every update's metrics out to the console, ``metrics.jsonl`` and W&B."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        resolved_config: dict,
        wandb_config: WandbConfig,
        total_steps: int,
        quiet: bool = False,
    ) -> None:
        self.metrics_file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close)
        self.total_steps = total_steps
        self.quiet = quiet
        self.wandb = None
        if wandb_config.mode != "disabled":
            self.wandb = WandbSink(wandb_config, run_dir, name, resolved_config)

    def log(self, metrics: dict[str, Any]) -> None:
        metrics = {key: _clean(value) for key, value in metrics.items()}
        self.metrics_file.write(json.dumps(metrics) + "\n")
        self.metrics_file.flush()
        if self.wandb is not None:
            self.wandb.log(metrics)
        if not self.quiet:
            print(self._line(metrics), flush=True)

    def _line(self, m: dict[str, Any]) -> str:
        ret = m.get("episodic_return")
        length = m.get("episodic_length")
        ret_text = f"{ret:9.2f}" if ret is not None else "        -"
        len_text = f"{length:7.1f}" if length is not None else "      -"
        return (
            f"step {m['global_step']:>9,}/{self.total_steps:,}  return {ret_text}  "
            f"len {len_text}  sps {m['sps']:7.0f}  "
            f"kl {m['approx_kl']:.4f}  ev {m.get('explained_variance') or 0:+.2f}"
        )

    def close(self) -> None:
        self.metrics_file.close()
        if self.wandb is not None:
            self.wandb.close()
