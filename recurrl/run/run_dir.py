"""A run's folder: created with its ``config.yaml`` (never over another run's checkpoints), and
its ``metrics.jsonl``, read back and cut to a resumed checkpoint's step.

Rank 0 makes and writes the folder; no other rank touches it, so a multi-machine run needs no
shared file system.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from recurrl.algo.distributed import World
from recurrl.config import Config, ConfigError, to_dict


def make_run_dir(config: Config, resuming: bool = False) -> Path:
    """Create the run folder (``run.dir``, default ``runs/<name>-<timestamp>``), write
    ``config.yaml``.

    Raises:
        ConfigError: the folder cannot be written, or a new run would overwrite one that has
            checkpoints (resume it instead).
    """
    from datetime import datetime

    if config.run.dir:
        run_dir = Path(config.run.dir)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{config.name}-{stamp}"
    existing = [p for p in ("latest.pt", "final.pt") if (run_dir / "checkpoints" / p).is_file()]
    if existing and not resuming:
        raise ConfigError(
            f"run.dir: {run_dir} already holds a run (checkpoints/{existing[0]}); continue it "
            f"with: recurrl train --resume {run_dir}, or choose another run.dir"
        )
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    except OSError as error:
        reason = error.strerror or error
        raise ConfigError(f"run.dir: cannot write to {run_dir}: {reason}") from None
    return run_dir


def open_run(config: Config, world: World, resume: dict | None) -> tuple[Path, list[dict]]:
    """The run folder (made by rank 0) and the metrics so far (rank 0's; the others: none).

    A resumed run's ``metrics.jsonl`` is cut back to the checkpoint's step.
    """
    run_dir = world.run_on_main(
        lambda: make_run_dir(config, resume is not None), refused=(ConfigError,)
    )
    if not world.is_main or resume is None:
        return run_dir, []
    return run_dir, truncate_metrics(run_dir, resume["global_step"])


def read_metrics(run_dir: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records of a run (those at or before ``up_to_step`` if given)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if up_to_step is None:
        return records
    return [r for r in records if r["global_step"] <= up_to_step]


def truncate_metrics(run_dir: Path, global_step: int) -> list[dict[str, Any]]:
    """Drop records logged after the checkpoint (a crash after it); return those kept."""
    kept = read_metrics(run_dir, global_step)
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(json.dumps(record) + "\n" for record in kept))
        temporary.replace(path)
    return kept
