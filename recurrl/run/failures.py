"""When training stops early: put back the last completed update, stop cleanly on a signal, and
say what was saved and how to go on.

A failure mid-update (``recurrl.errors``: an env that raised or returned NaN, an update that
diverged) never leaves half an update behind: :class:`Rollback` holds the state the last
completed update left, the trainer puts it back and writes ``latest.pt`` with it, and
:func:`failure_outcome` is what the error's message gets appended. The first SIGINT or SIGTERM
(:class:`GracefulStop`) finishes the current update, checkpoints and stops.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from recurrl.algo.distributed import World
from recurrl.errors import CheckpointWriteError, DivergenceError, TrainingError


class Rollback:
    """The state the last completed update left, to fall back to when the next one fails.

    Holds copies of the policy's and optimizer's state and this rank's ``rank_state`` (random
    streams, collector, envs as they were before the rollout), so a checkpoint written after a
    failure mid-update is the checkpoint the last update would have written.
    """

    def __init__(
        self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, rank_state: dict
    ) -> None:
        self.policy, self.optimizer, self.rank_state = policy, optimizer, rank_state
        self.policy_state = {key: value.clone() for key, value in policy.state_dict().items()}
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())

    def restore(self) -> None:
        """Put the parameters, statistics and optimizer state back."""
        self.policy.load_state_dict(self.policy_state)
        self.optimizer.load_state_dict(self.optimizer_state)


class GracefulStop:
    """First SIGINT or SIGTERM: finish the current update, checkpoint, stop cleanly.

    A second signal raises ``KeyboardInterrupt`` at once. Handlers are installed only in the
    main thread (``signal`` allows no other), never over an ignored signal, and restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: signal.signal(sig, self._handle)
            for sig in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(sig) is not signal.SIG_IGN  # e.g. under nohup: stay ignored
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nrecurrl: {signal.Signals(signum).name} received: finishing this update and "
            f"writing a checkpoint (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )


def failure_outcome(
    error: TrainingError, world: World, run_dir: Path, saved: str, learning_rate: float
) -> str:
    """What a :class:`~recurrl.errors.TrainingError`'s message gets appended: what was saved
    and how to go on (``learning_rate``: the rate the failed update ran with)."""
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


def stopped_message(global_step: int, total_steps: int, path: Path | None, run_dir: Path) -> str:
    """What a run stopped by SIGINT / SIGTERM prints: where it stopped and how to go on."""
    return (
        f"recurrl: stopped at step {global_step:,} of {total_steps:,}; saved {path}\n"
        f"recurrl: resume with: recurrl train --resume {run_dir}"
    )


def crash_message(
    error: BaseException, global_step: int, saved: str, run_dir: Path, resumable: bool
) -> str:
    """What a run stopped by anything but a :class:`~recurrl.errors.TrainingError` (a crash, a
    second signal) prints besides the traceback: what was saved and how to go on."""
    resume = f"; resume with: recurrl train --resume {run_dir}" if resumable else ""
    return f"recurrl: stopped at step {global_step:,} ({type(error).__name__}); {saved}{resume}"


def close_quietly(envs) -> None:
    """Close the envs; a broken env failing to close must not hide the error that broke it."""
    try:
        envs.close()
    except Exception as error:
        print(f"recurrl: closing the envs failed too ({type(error).__name__})", file=sys.stderr)
