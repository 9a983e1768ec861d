"""Errors that stop a training run that was set up correctly.

Bad input (a config, a checkpoint) is refused before a run starts with
:class:`~recurrl.config.ConfigError` or :class:`~recurrl.run.checkpoints.CheckpointError` (exit code
2). The errors here happen while training: an env that raised or returned NaN, a loss that
diverged, a checkpoint that could not be written. The trainer catches them, writes a checkpoint
of the last completed update where it can, and appends what it saved and how to continue to the
message (:attr:`TrainingError.outcome`); ``recurrl train`` prints it and exits with code 1.
"""

from __future__ import annotations

from pathlib import Path


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says what failed, where, and what was saved.

    Args:
        message: what failed and where (env id, env index, step; or the diverged term).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = ""  # filled in by the trainer: what it saved, how to resume

    def __str__(self) -> str:
        return f"{self.message}; {self.outcome}" if self.outcome else self.message


class EnvStepError(TrainingError):
    """An env raised while being stepped or reset; the original error is ``__cause__``."""


class NonFiniteError(TrainingError):
    """An env returned NaN or inf in an observation or a reward (``env.skip_nonfinite`` off)."""


class DivergenceError(TrainingError):
    """The PPO loss or its gradient became NaN or inf; no step was taken with it."""


class CheckpointWriteError(TrainingError, OSError):
    """A checkpoint could not be written (e.g. a full disk); the previous file is intact.

    Args:
        path: the checkpoint file.
        reason: the system's words (``strerror``); ``errno`` is the system's number.
        previous_intact: a previous file is at ``path`` (and untouched).
        previous_step: the global step that file holds, when known.
    """

    def __init__(
        self,
        path: Path,
        reason: str,
        errno: int | None = None,
        previous_intact: bool = False,
        previous_step: int | None = None,
    ) -> None:
        if not previous_intact:
            kept = "none was there before"
        elif previous_step is None:
            kept = f"the previous {path.name} is intact"
        else:
            kept = f"the previous {path.name} is intact (it holds global step {previous_step:,})"
        super().__init__(f"could not write checkpoint {path}: {reason}; {kept}")
        self.path, self.errno = path, errno
        self.previous_intact, self.previous_step = previous_intact, previous_step


class PeerFailure(TrainingError):
    """Another rank of a data-parallel run failed; its own message says why."""
