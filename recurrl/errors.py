"""Errors that stop a training run that was set up correctly.

Bad input (a config, a checkpoint) is refused before a run starts with
:class:`~recurrl.config.ConfigError` or :class:`~recurrl.run.checkpoint.CheckpointError` (exit code
2). The errors here happen while training: an env that raised or returned NaN, a loss that
diverged, a checkpoint that could not be written. The trainer catches them, writes a checkpoint
of the last completed update where it can, and appends what it saved and how to continue to the
message (:attr:`TrainingError.outcome`); ``recurrl train`` prints it and exits with code 1.
"""

from __future__ import annotations


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
    """A checkpoint could not be written (e.g. a full disk; ``errno`` is the system's); the
    previous file is intact."""


class PeerFailure(TrainingError):
    """Another rank of a data-parallel run failed; its own message says why."""
