"""Gymnasium spaces as plain data, so checkpoints hold them without pickled objects.

``weights_only=True`` checkpoints may only contain tensors and plain containers, so a space is
stored as a dict (``space_to_dict``) and rebuilt on load (``space_from_dict``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


class UnsupportedSpaceError(ValueError):
    """A space the policy cannot handle; the message names the space and what to do."""


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """Describe ``space`` with plain lists, numbers and strings."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
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
        return spaces.Box(
            low=np.asarray(data["low"], dtype=dtype),
            high=np.asarray(data["high"], dtype=dtype),
            shape=tuple(data["shape"]),
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
