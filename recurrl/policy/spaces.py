"""Gymnasium spaces: which ones the policy takes, images, and spaces as plain data.

- :func:`check_observation_space` / :func:`check_action_space` refuse, at construction, the
  spaces no policy here can handle, with a message naming the (nested) space and the wrapper
  that converts it.
- :func:`image_layout` detects image observations (``uint8`` in ``[0, 255]``, ``HxWxC`` or
  ``CxHxW``).
- ``weights_only=True`` checkpoints may only contain tensors and plain containers, so a space is
  stored as a dict (:func:`space_to_dict`) and rebuilt on load (:func:`space_from_dict`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from recurrl.config import ConfigError

ACTION_MASK_KEY = "action_mask"
"""A top-level ``Dict`` observation key holding the valid-action mask of discrete actions."""


class UnsupportedSpaceError(ConfigError):
    """A space the policy cannot handle; the message names the space and what to do.

    A :class:`~recurrl.config.ConfigError` (the env chosen does not fit), so the command line
    reports it in one line before anything starts.
    """


_REFUSED = {
    spaces.Text: "encode the text as token ids with an ObservationWrapper (e.g. to "
    "MultiDiscrete or a Box of ids)",
    spaces.Graph: "convert the graph to fixed-size arrays with an ObservationWrapper (e.g. "
    "padded node/edge features in a Box plus a MultiBinary mask)",
    spaces.Sequence: "pad the variable-length sequence to a fixed length with an "
    "ObservationWrapper (a Box plus a MultiBinary mask of valid entries)",
    spaces.OneOf: "turn the alternatives into one Dict (one part per alternative plus a "
    "Discrete selector) with an ObservationWrapper",
}


def _name(path: str) -> str:
    return f"observation space{path}" if path else "observation space"


def _check_box(space: spaces.Box, where: str) -> None:
    if space.dtype.kind in "iu" and not space.is_bounded("both"):
        raise UnsupportedSpaceError(
            f"{where} {space} is an unbounded integer space: give it finite bounds or rescale it "
            f"with an ObservationWrapper (e.g. gymnasium.wrappers.TransformObservation with a "
            f"clip or a log scale and a bounded Box)"
        )
    if 0 in space.shape:
        raise UnsupportedSpaceError(f"{where} {space} is empty: drop it with a wrapper")


def check_observation_space(space: spaces.Space, path: str = "") -> None:
    """Raise :class:`UnsupportedSpaceError` unless the policy can encode ``space``.

    Args:
        space: a single-env observation space (nested ``Dict``/``Tuple`` checked part by part).
        path: where ``space`` sits in the observation, e.g. ``['camera']`` (for messages).
    """
    where = _name(path)
    for kind, advice in _REFUSED.items():
        if isinstance(space, kind):
            raise UnsupportedSpaceError(f"{where} {space} is not supported: {advice}")
    if isinstance(space, spaces.Dict):
        for key, part in space.spaces.items():
            check_observation_space(part, f"{path}[{key!r}]")
    elif isinstance(space, spaces.Tuple):
        for index, part in enumerate(space.spaces):
            check_observation_space(part, f"{path}[{index}]")
    elif isinstance(space, spaces.Box):
        _check_box(space, where)
    elif not isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        raise UnsupportedSpaceError(
            f"{where} {space!r} ({type(space).__name__}) is not supported: use Box, Discrete, "
            f"MultiDiscrete, MultiBinary, Tuple or Dict (convert it with an ObservationWrapper)"
        )


def check_action_space(space: spaces.Space) -> None:
    """Raise :class:`UnsupportedSpaceError` unless a policy head exists for ``space``."""
    if isinstance(space, spaces.Box):
        if space.dtype.kind not in "f":
            raise UnsupportedSpaceError(
                f"action space {space} has dtype {space.dtype}: use a float Box (or Discrete / "
                f"MultiDiscrete for integer actions) via an ActionWrapper"
            )
        if not np.all(np.isfinite(space.low)) or not np.all(np.isfinite(space.high)):
            raise UnsupportedSpaceError(
                f"action space {space} has infinite bounds: give it finite bounds "
                f"(e.g. gymnasium.wrappers.RescaleAction)"
            )
        return
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        return
    advice = "an ActionWrapper"
    if isinstance(space, spaces.Tuple | spaces.Dict):
        advice = "an ActionWrapper that flattens it into one MultiDiscrete or Box"
    raise UnsupportedSpaceError(
        f"action space {space} ({type(space).__name__}) is not supported: actions must be "
        f"Discrete, MultiDiscrete, MultiBinary or Box; convert it with {advice}"
    )


def channel_layout(shape: tuple[int, ...]) -> str:
    """``"CHW"`` if the first axis of a 3-d shape is the shorter end one, else ``"HWC"``.

    The channel axis is the shorter of the first and last (a tie is ``HWC``, Gymnasium's
    convention), so frame stacks such as ``4x84x84`` and ``84x84x12`` are read right too.
    """
    return "CHW" if shape[0] < shape[-1] else "HWC"


def image_layout(space: spaces.Space) -> str | None:
    """``"HWC"`` or ``"CHW"`` for an image ``Box`` (uint8 in ``[0, 255]``, 3 dims), else None."""
    if not isinstance(space, spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 3:
        return None
    if not (np.all(space.low == 0) and np.all(space.high == 255)):
        return None
    return channel_layout(space.shape)


def _bound(values: np.ndarray) -> Any:
    """One number if every entry is equal (compact checkpoints for images), else a list."""
    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return flat[0].item()
    return values.tolist()


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """Describe ``space`` with plain lists, numbers and strings."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": _bound(space.low),
            "high": _bound(space.high),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_dict(s) for s in space.spaces]}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    raise UnsupportedSpaceError(
        f"cannot store {space!r}: supported spaces are Box, Discrete, MultiDiscrete, "
        f"MultiBinary, Tuple and Dict; wrap the env to convert it"
    )


def space_from_dict(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_dict`."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(data["shape"])
        return spaces.Box(
            low=np.broadcast_to(np.asarray(data["low"], dtype=dtype), shape),
            high=np.broadcast_to(np.asarray(data["high"], dtype=dtype), shape),
            shape=shape,
            dtype=dtype,
        )
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Tuple":
        return spaces.Tuple([space_from_dict(s) for s in data["spaces"]])
    if kind == "Dict":
        return spaces.Dict({k: space_from_dict(s) for k, s in data["spaces"].items()})
    raise UnsupportedSpaceError(f"unknown stored space type {kind!r}")
