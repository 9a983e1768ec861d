"""Nested observations: dicts and tuples of arrays or tensors, handled leaf by leaf.

A ``Dict`` or ``Tuple`` observation arrives from Gymnasium as a dict / tuple of arrays. Inside
recurrl it travels as a :class:`TensorTree`, which indexes, slices and selects like one tensor
(every leaf shares the leading ``[T, B]`` or ``[B]`` dimensions), so the rollout buffer, the TBPTT
chunking and ``obs[mask]`` work the same for flat and nested observations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` to the leaves of ``tree`` (and the matching leaves of ``rest``).

    Dicts and plain tuples are containers; everything else (tensors, arrays, numbers) is a
    leaf. A :class:`TensorTree` maps to a :class:`TensorTree`.
    """
    if isinstance(tree, TensorTree):
        return TensorTree(tree_map(fn, tree.data, *(_data(r) for r in rest)))
    if isinstance(tree, Mapping):
        return {key: tree_map(fn, tree[key], *(r[key] for r in rest)) for key in tree}
    if type(tree) is tuple:
        return tuple(tree_map(fn, *parts) for parts in zip(tree, *rest, strict=True))
    return fn(tree, *rest)


def tree_leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree`` in a fixed order (dict insertion order, tuple order)."""
    if isinstance(tree, TensorTree):
        return tree_leaves(tree.data)
    if isinstance(tree, Mapping):
        return [leaf for key in tree for leaf in tree_leaves(tree[key])]
    if type(tree) is tuple:
        return [leaf for part in tree for leaf in tree_leaves(part)]
    return [tree]


def _data(tree: Any) -> Any:
    return tree.data if isinstance(tree, TensorTree) else tree


class TensorTree:
    """Tensors in a nested dict / tuple that share leading dimensions, used like one tensor.

    Indexing (``tree[t]``, ``tree[start:stop]``, ``tree[mask]``), assignment
    (``tree[t] = other``), ``index_select``, ``to`` and ``cpu`` act on every leaf. ``data`` is the
    plain dict / tuple (e.g. ``tree.data["camera"]``).
    """

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any] | tuple[Any, ...]) -> None:
        if not isinstance(data, Mapping | tuple):
            raise TypeError(f"TensorTree holds a dict or tuple, got {type(data).__name__}")
        self.data = data

    def map(self, fn: Callable[[Tensor], Tensor]) -> TensorTree:
        return tree_map(fn, self)

    def leaves(self) -> list[Tensor]:
        return tree_leaves(self.data)

    def __getitem__(self, index: Any) -> TensorTree:
        return self.map(lambda x: x[index])

    def __setitem__(self, index: Any, value: TensorTree) -> None:
        for leaf, new in zip(self.leaves(), tree_leaves(value), strict=True):
            leaf[index] = new

    def index_select(self, dim: int, index: Tensor) -> TensorTree:
        return self.map(lambda x: x.index_select(dim, index))

    def to(self, *args: Any, **kwargs: Any) -> TensorTree:
        return self.map(lambda x: x.to(*args, **kwargs))

    def cpu(self) -> TensorTree:
        return self.map(lambda x: x.cpu())

    def clone(self) -> TensorTree:
        return self.map(lambda x: x.clone())

    @property
    def device(self) -> torch.device:
        return self.leaves()[0].device

    def __repr__(self) -> str:
        shapes = tree_map(lambda x: f"{x.dtype}{list(x.shape)}", self.data)
        return f"TensorTree({shapes})"


Observation = Tensor | TensorTree
"""A batch of observations: a tensor, or a :class:`TensorTree` for ``Dict``/``Tuple`` spaces."""


def as_observation(obs: Any, device: torch.device | str | None = None) -> Observation:
    """Arrays from an env (or a vector env) -> a tensor or :class:`TensorTree` on ``device``."""
    if isinstance(obs, TensorTree | Tensor):
        return obs.to(device) if device is not None else obs
    if isinstance(obs, Mapping | tuple):
        return TensorTree(tree_map(lambda x: torch.as_tensor(np.asarray(x), device=device), obs))
    return torch.as_tensor(np.asarray(obs), device=device)


def stack_observations(items: list[Any]) -> Any:
    """Stack single-env observations (arrays or nested dicts / tuples of arrays) along axis 0."""
    return tree_map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *items)


def space_leaves(space: spaces.Space, path: tuple = ()) -> list[tuple[tuple, spaces.Space]]:
    """``(path, space)`` of every non-container part of ``space``, in the space's key order.

    ``path`` is the sequence of keys / indices from the top, e.g. ``("camera",)`` or ``(1, "x")``.
    """
    if isinstance(space, spaces.Dict):
        return [
            leaf for key, sub in space.spaces.items() for leaf in space_leaves(sub, (*path, key))
        ]
    if isinstance(space, spaces.Tuple):
        return [
            leaf for i, sub in enumerate(space.spaces) for leaf in space_leaves(sub, (*path, i))
        ]
    return [(path, space)]


def observation_leaves(space: spaces.Space, obs: Any) -> list[Any]:
    """The parts of ``obs`` (tensor, array, dict / tuple or TensorTree) in ``space``'s order."""
    data = _data(obs)
    leaves = []
    for path, _ in space_leaves(space):
        node = data
        for key in path:
            node = node[key]
        leaves.append(node)
    return leaves
