"""Checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``.

A checkpoint holds only tensors and plain data: the policy and optimizer state dicts, the
resolved config, the spaces (as dicts, see ``recurrl.policy.spaces``) and the global step; one
written by a training run also holds its ``training`` state for exact resume
(``recurrl.run.resume``).
Nothing is unpickled beyond that, so a file carrying pickled code is refused. A write goes to a
temporary file renamed over the target, so a failed or killed write keeps the previous file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

import recurrl
from recurrl.config import ConfigError, config_from_dict
from recurrl.errors import CheckpointWriteError
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


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically: a temporary file, then a rename over ``path``.

    A write that fails or is killed half-way leaves the previous file at ``path`` intact.

    Raises:
        CheckpointWriteError: the file system refused the write (full disk, permissions);
            the message names the file and says whether a previous one is intact.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, temporary)
        os.replace(temporary, path)  # atomic on POSIX
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        kept = f"the previous {path.name} is intact" if path.is_file() else "none was there before"
        failure = CheckpointWriteError(
            f"could not write checkpoint {path}: {error.strerror or error}; {kept}"
        )
        failure.errno = error.errno
        raise failure from error
    return path


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
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # not an object reference: damaged bytes
            raise CheckpointError(f"{path}: cannot read checkpoint (corrupted)") from None
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain data ({reason})"
        ) from None
    except Exception as error:  # truncated / not a torch file
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a recurrl checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not "
            f"supported by recurrl {recurrl.__version__} (expects {FORMAT_VERSION})"
        )
    return payload


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
