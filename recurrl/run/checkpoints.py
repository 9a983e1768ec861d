"""Checkpoint files: written atomically and durably, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain data: the policy and optimizer state dicts, the
resolved config, the spaces (as dicts, see ``recurrl.policy.spaces``) and the global step; one
written by a training run also holds its ``training`` state for exact resume
(``recurrl.run.resume``). Nothing is unpickled beyond that, so a file carrying pickled code is
refused.

A write goes to a temporary file that is flushed to disk (``fsync``) and then renamed over the
target, and the folder is synced after the rename: a failed or killed write, or a power loss,
leaves either the previous file or the new one, never a partial one.

:class:`RunCheckpoints` is a run's ``checkpoints/`` folder: ``latest.pt``, ``best.pt``,
``final.pt`` and the step-stamped copies ``run.keep_checkpoints`` keeps. Every rank of a
data-parallel run sends it its random streams and collector / env state; rank 0 writes them all
into one file, so a multi-machine run needs no shared file system.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

import recurrl
from recurrl.algo.distributed import World
from recurrl.config import ConfigError, config_from_dict
from recurrl.errors import CheckpointWriteError, PeerFailure
from recurrl.policy import ActorCritic
from recurrl.policy.spaces import space_from_dict, space_to_dict

FORMAT = "recurrl-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def checkpoint_payload(
    policy: ActorCritic,
    config_dict: dict[str, Any],
    global_step: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a checkpoint file holds, as tensors and plain data."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "recurrl_version": recurrl.__version__,
        "config": config_dict,
        "observation_space": space_to_dict(policy.observation_space),
        "action_space": space_to_dict(policy.action_space),
        "policy": policy.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "global_step": int(global_step),
        **(extra or {}),
    }


def write_checkpoint(
    path: str | Path, payload: dict[str, Any], held_step: int | None = None
) -> Path:
    """Write ``payload`` atomically and durably: a temporary file synced to disk, then a rename
    over ``path``, then the folder synced (so the rename survives a power loss).

    A write that fails or is killed half-way leaves the previous file at ``path`` intact.

    Args:
        path: the checkpoint file.
        payload: tensors and plain data (:func:`checkpoint_payload`).
        held_step: the global step the file at ``path`` holds now, for the message if the
            write fails.

    Raises:
        CheckpointWriteError: the file system refused the write (full disk, permissions);
            the message names the file and says whether a previous one is intact.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, temporary)
        _sync(temporary)  # the bytes are on disk before the name points at them
        os.replace(temporary, path)  # atomic on POSIX
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        raise CheckpointWriteError(
            path, error.strerror or str(error), error.errno, path.is_file(), held_step
        ) from error
    _sync_folder(path.parent)
    return path


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Some systems (Windows) and file systems cannot sync
    a folder; the file itself is synced already, so that is not an error."""
    with contextlib.suppress(OSError):
        _sync(folder)


def save_checkpoint(
    path: str | Path,
    policy: ActorCritic,
    config_dict: dict[str, Any],
    global_step: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename over ``path``)."""
    payload = checkpoint_payload(policy, config_dict, global_step, optimizer, extra)
    return write_checkpoint(path, payload)


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step-stamped ``step-*.pt`` files in ``directory``."""
    stamped = sorted(Path(directory).glob("step-*.pt"))  # zero-padded: name order = step order
    for old in stamped[: max(0, len(stamped) - keep)]:
        old.unlink(missing_ok=True)


def merge_rank_states(common: dict[str, Any], ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint's ``training`` state: the ``common`` counters plus every rank's own state.

    Rank 0's ``rng`` / ``collector`` / ``envs`` sit at the top level (as in a single-process
    checkpoint), the other ranks' in ``other_ranks``, their number in ``world_size``.
    """
    return {**common, **ranks[0], "world_size": len(ranks), "other_ranks": ranks[1:]}


def rank_state_of(training: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s part of a checkpoint's ``training`` state (:func:`merge_rank_states`);
    None for a rank the checkpoint has no state for (it was written by fewer ranks)."""
    if rank == 0:
        return training
    others = training.get("other_ranks", [])
    return others[rank - 1] if rank - 1 < len(others) else None


class RunCheckpoints:
    """A training run's ``checkpoints/`` folder: every rank calls :meth:`save`, rank 0 writes.

    Args:
        directory: ``<run dir>/checkpoints`` (rank 0's).
        world: the ranks.
        policy, optimizer: what every checkpoint holds the state of.
        config: the resolved config as a dict.
        callbacks: told of each checkpoint written with aliases (``on_checkpoint``: W&B
            uploads it); rank 0's.
        keep: ``run.keep_checkpoints``: step-stamped copies kept besides ``latest.pt``.
        held_steps: ``{file name: global step}`` of files already there (a resumed run's
            ``latest.pt``), for the message when overwriting one fails.
    """

    def __init__(
        self,
        directory: Path,
        world: World,
        policy: ActorCritic,
        optimizer: torch.optim.Optimizer,
        config: dict[str, Any],
        callbacks: Any,
        keep: int,
        held_steps: dict[str, int] | None = None,
    ) -> None:
        self.directory, self.world, self.keep = directory, world, keep
        self.callbacks = callbacks
        self.policy, self.optimizer, self.config = policy, optimizer, config
        self.held_steps = dict(held_steps or {})

    @property
    def latest(self) -> Path:
        return self.directory / "latest.pt"

    def save(
        self,
        name: str,
        global_step: int,
        counters: dict[str, Any],
        rank_state: dict[str, Any],
        aliases: list[str] | None = None,
        stamped: bool = False,
    ) -> Path | None:
        """Write ``<directory>/<name>`` with the training ``counters`` and every rank's
        ``rank_state``; with ``stamped`` (and ``keep``) also ``step-<global_step>.pt``, dropping
        the oldest stamped copies; with ``aliases`` tell the callbacks (W&B uploads it).

        Returns:
            The path on rank 0, None on the other ranks.

        Raises:
            CheckpointWriteError: rank 0 could not write (PeerFailure on the other ranks); the
                previous file is intact.
        """
        ranks = self.world.gather(rank_state)
        path, failure = None, None
        if self.world.is_main:
            training = merge_rank_states(counters, ranks)
            payload = checkpoint_payload(
                self.policy, self.config, global_step, self.optimizer, {"training": training}
            )
            try:
                path = self._write(name, payload, stamped)
            except CheckpointWriteError as error:
                failure = error
        if self.world.ranks_where(failure is not None):
            raise failure or PeerFailure("rank 0 could not write a checkpoint (see its message)")
        if path is not None and aliases is not None:
            self.callbacks.on_checkpoint(path, aliases, global_step)
        return path

    def _write(self, name: str, payload: dict[str, Any], stamped: bool) -> Path:
        step = payload["global_step"]
        path = write_checkpoint(self.directory / name, payload, self.held_steps.get(name))
        self.held_steps[name] = step
        if stamped and self.keep:
            write_checkpoint(self.directory / f"step-{step:012d}.pt", payload)
            prune_checkpoints(self.directory, self.keep)
        return path


def check_spaces(payload: dict[str, Any], observation_space, action_space, where: str) -> None:
    """Refuse a checkpoint trained on other observation or action spaces than ``where`` has."""
    for kind, space in (("observation", observation_space), ("action", action_space)):
        stored = payload[f"{kind}_space"]
        if space_to_dict(space) != stored:
            raise CheckpointError(
                f"{where} has {kind} space {space}, but the checkpoint was trained on "
                f"{space_from_dict(stored)}"
            )


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run dir (its ``final.pt``, else ``latest.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("final.pt", "latest.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: no checkpoints/final.pt or checkpoints/latest.pt in it")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely; corrupted, foreign or code-carrying files raise CheckpointError."""
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(
                f"{path}: refused: it holds objects other than tensors and plain data "
                f"({', '.join(sorted(unsafe))})"
            ) from None
        if not _looks_like_torch_file(path):
            raise CheckpointError(
                f"{path}: not a checkpoint ({_what_file(path)}); expected a run folder or a "
                f".pt file written by recurrl"
            ) from None
        damage = "corrupted" if isinstance(error, pickle.UnpicklingError) else type(error).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({damage})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a recurrl checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not "
            f"supported by recurrl {recurrl.__version__} (expects {FORMAT_VERSION})"
        )
    return payload


# How a file written by torch.save starts: a zip archive (the format since torch 1.6) or, in
# the legacy format, a pickle (protocol 2 and up start with 0x80).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".tmp"}


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` could be a (damaged) torch file rather than some other file: it starts
    as one, is empty, or carries a checkpoint's suffix. A YAML config or a text file does not."""
    with contextlib.suppress(OSError):
        with open(path, "rb") as file:
            head = file.read(4)
        if not head or head.startswith(_TORCH_MAGIC):
            return True
    return path.suffix.lower() in _CHECKPOINT_SUFFIXES


def _what_file(path: Path) -> str:
    """A few words on what ``path`` is, for the message refusing it as a checkpoint."""
    if path.suffix.lower() in {".yaml", ".yml"}:
        return "a YAML file, a config?"
    try:
        with open(path, "rb") as file:
            head = file.read(4096)
    except OSError as error:
        return error.strerror or type(error).__name__
    return "a binary file torch.save did not write" if b"\0" in head else "a text file"


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions the file's pickle names beyond what ``weights_only`` allows
    (read from its opcodes, nothing run); empty when the file is not a readable torch file."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # damaged or not a torch zip file
        return []


def policy_from_checkpoint(payload: dict[str, Any], device: str | torch.device = "cpu"):
    """Rebuild the policy (and its config) from a loaded checkpoint payload."""
    try:
        config = config_from_dict(payload["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint config is invalid: {error}") from None
    policy = ActorCritic(
        space_from_dict(payload["observation_space"]),
        space_from_dict(payload["action_space"]),
        config.policy,
        normalize_obs=config.env.normalize_obs,
    )
    policy.load_state_dict(payload["policy"])
    return policy.to(device).eval(), config


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> ActorCritic:
    """A ready policy from a checkpoint file or run directory.

    Example::

        policy = recurrl.load_policy("runs/cartpole/checkpoints/final.pt")
        obs, _ = env.reset()
        action, state = policy.act(obs, None, episode_start=True)
    """
    policy, _ = policy_from_checkpoint(load_checkpoint(path), device)
    return policy
