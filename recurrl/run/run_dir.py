"""A run's folder and saved state: creating the folder, writing checkpoints gathered from every
rank, loading one back into a new run, and what a failed run's message says it saved.

A training checkpoint's ``training`` dict holds the counters (``update``, ``time_s``, ...), rank
0's random streams and collector / env state at the top level (as a single-process checkpoint
always has), ``world_size`` and the other ranks' states in ``other_ranks`` (see
``recurrl.run.resume``). Rank 0 gathers them and writes; no other rank touches the run folder, so a
multi-machine run needs no shared file system.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
import yaml

from recurrl.algo.distributed import World
from recurrl.algo.rollout import Collector
from recurrl.config import Config, ConfigError, to_dict
from recurrl.errors import CheckpointWriteError, DivergenceError, PeerFailure, TrainingError
from recurrl.policy import ActorCritic
from recurrl.run.checkpoint import check_spaces, prune_checkpoints, write_checkpoint
from recurrl.run.resume import Rollback, rank_state_of, restore_env_state, truncate_metrics
from recurrl.run.tracking import NullTracker, Tracker


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


class RunCheckpoints:
    """Writes one run's checkpoints; every rank calls :meth:`save`, rank 0 writes.

    Args:
        run_dir: the run folder (rank 0's).
        world: the ranks.
        tracker: uploads checkpoints to W&B (rank 0's tracker; the others log nothing).
        keep: ``run.keep_checkpoints``.
        payload: ``payload(ranks)``: the checkpoint (policy, optimizer, config, counters) for
            the gathered per-rank states.
        saved_steps: ``{file name: global step}`` of checkpoints already written (a resumed run's
            ``latest.pt``), for the message when a write fails.
    """

    def __init__(
        self,
        run_dir: Path,
        world: World,
        tracker: Any,
        keep: int,
        payload: Callable[[list[dict]], dict],
        saved_steps: dict[str, int] | None = None,
    ) -> None:
        self.run_dir, self.world, self.tracker, self.keep = run_dir, world, tracker, keep
        self.payload = payload
        self.saved_steps = dict(saved_steps or {})

    @property
    def latest(self) -> Path:
        return self.run_dir / "checkpoints" / "latest.pt"

    def save(
        self,
        name: str,
        global_step: int,
        rank_state: dict,
        aliases: list[str] | None = None,
        stamped: bool = False,
    ) -> Path | None:
        """Write ``checkpoints/<name>`` (and ``step-<global_step>.pt`` if ``stamped`` and
        ``keep``); with ``aliases`` also upload it to W&B (``tracking.wandb.log_checkpoints``).

        Returns:
            The path on rank 0, None on the other ranks.

        Raises:
            CheckpointWriteError: rank 0 could not write (raised on every rank; the previous
                file is intact).
        """
        ranks = self.world.gather(rank_state)
        failure, path = None, None
        if self.world.is_main:
            try:
                path = self._write(name, global_step, ranks, aliases, stamped)
            except CheckpointWriteError as error:
                if "is intact" in error.message and name in self.saved_steps:
                    error.message += f" (it holds global step {self.saved_steps[name]:,})"
                failure = error
        if self.world.ranks_where(failure is not None):
            raise failure or PeerFailure("rank 0 could not write a checkpoint (see its message)")
        return path

    def save_after_failure(
        self,
        error: BaseException,
        global_step: int,
        rank_state: Callable[[], dict],
        rollback: Rollback | None,
    ) -> str:
        """Write ``latest.pt`` with the last completed update after ``error``; say what was saved.

        Mid-update (``rollback`` given) the policy and optimizer are put back first and the
        rank state from before the update is written, never half an update. With several ranks
        only a failure all ranks agree on (a TrainingError) can checkpoint, as every rank takes
        part; after any other the last checkpoint stays. A failed write is not retried.
        """
        path = self.latest
        if isinstance(error, CheckpointWriteError):
            return ""
        if self.world.active and not isinstance(error, TrainingError):
            return f"kept the last checkpoint {path}" if path.is_file() else "nothing was saved"
        try:
            if rollback is None:
                self.save("latest.pt", global_step, rank_state())
            else:
                rollback.restore()
                self.save("latest.pt", global_step, rollback.rank_state)
        except Exception as save_error:
            return f"could not save {path} ({type(save_error).__name__}: {save_error})"
        return f"saved {path} (global step {global_step:,})"

    def _write(self, name: str, global_step: int, ranks: list[dict], aliases, stamped) -> Path:
        payload = self.payload(ranks)
        directory = self.run_dir / "checkpoints"
        path = write_checkpoint(directory / name, payload)
        self.saved_steps[name] = global_step
        if aliases is not None:
            self.tracker.log_checkpoint(path, aliases, global_step)
        if stamped and self.keep:
            write_checkpoint(directory / f"step-{global_step:012d}.pt", payload)
            prune_checkpoints(directory, self.keep)
        return path


def open_run(
    config: Config, world: World, quiet: bool, resume: dict | None
) -> tuple[Path, list[dict], Tracker | NullTracker]:
    """The run folder (made by rank 0), the metrics so far and the tracker (rank 0's logs).

    A resumed run's ``metrics.jsonl`` is cut back to the checkpoint's step.
    """
    run_dir = world.run_on_main(
        lambda: make_run_dir(config, resume is not None), refused=(ConfigError,)
    )
    if not world.is_main:
        return run_dir, [], NullTracker()
    step = resume["global_step"] if resume is not None else 0
    history = truncate_metrics(run_dir, step) if resume is not None else []
    tracker = Tracker(
        run_dir,
        config.name,
        to_dict(config),
        config.tracking,
        config.ppo.total_steps,
        quiet,
        wandb_id=resume["training"].get("wandb_id") if resume else None,
        start_step=step,
    )
    return run_dir, history, tracker


def restore_run(
    payload: dict,
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    collector: Collector,
    envs: gym.vector.VectorEnv,
    world: World,
    env_id: str,
) -> dict | None:
    """Load a training checkpoint into a new run (this rank's part).

    Parameters and optimizer always; this rank's collector and envs when the checkpoint holds
    this rank's state and the env can take it (``recurrl.run.resume.StatefulVectorEnv``), else the
    envs restart with a fresh reset (reward-scaling statistics kept).

    Returns:
        This rank's saved random streams and collector / env state, or None when the
        checkpoint was written by fewer ranks.

    Raises:
        CheckpointError: the checkpoint's spaces are not the env's.
    """
    check_spaces(payload, envs.single_observation_space, envs.single_action_space, f"env {env_id}")
    policy.load_state_dict(payload["policy"])
    optimizer.load_state_dict(payload["optimizer"])
    training = payload["training"]
    own = rank_state_of(training, world.rank)
    saved_ranks = training.get("world_size", 1)
    if saved_ranks != world.size and world.is_main:
        print(
            f"recurrl: the checkpoint holds the state of {saved_ranks} rank(s), this run has "
            f"{world.size}: ranks from {saved_ranks} on start with fresh envs",
            file=sys.stderr,
        )
    if own is not None and restore_env_state(envs, own["envs"]):
        collector.load_state_dict(own["collector"])
        return own
    scaler = own["collector"]["reward_scaler"] if own is not None else None
    if collector.reward_scaler is not None and scaler is not None:
        fresh = {**scaler, "discounted": [0.0] * envs.num_envs}  # episodes restart
        collector.reward_scaler.load_state_dict(fresh)
    if own is not None and world.is_main:
        print(
            f"recurrl: {env_id} cannot save its state (no get_state/set_state), so its envs "
            f"restart with a fresh reset and the recurrent state resets; the rest of the run "
            f"(parameters, optimizer, statistics, random streams) is restored",
            file=sys.stderr,
        )
    return own


def failure_outcome(
    error: TrainingError, world: World, run_dir: Path, saved: str, learning_rate: float
) -> str:
    """What a :class:`~recurrl.errors.TrainingError`'s message gets appended: what was saved
    and how to go on."""
    if not world.is_main:
        return f"on rank {world.rank} (rank 0 writes the checkpoint)"
    resume = f"resume with: recurrl train --resume {run_dir}"
    if isinstance(error, DivergenceError):
        return (
            f"the parameters from before that update were restored; {saved}; lower "
            f"ppo.learning_rate (now {learning_rate:g}) and {resume} ppo.learning_rate=..."
        )
    if isinstance(error, CheckpointWriteError):
        return f"free some space, then {resume}"
    return f"{saved}; {resume}"
