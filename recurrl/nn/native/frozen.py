"""Blocks in which no weight changes (acting, evaluating), and what is derived from weights in them.

Inside :func:`frozen_weights` the kernels compute what depends only on weights (``W^T`` copies,
summed biases) once for the block instead of once per call. Only :mod:`recurrl.nn` and
:mod:`recurrl.policy` know of it: callers above open ``policy.acting()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_frozen: dict[tuple, tuple[tuple[Any, ...], Any]] | None = None
"""Inside :func:`frozen_weights`: ``(what, id(source), ...) -> (sources, derived tensor)``."""


@contextmanager
def frozen_weights() -> Iterator[None]:
    """Declare that no weight changes inside the block (acting, evaluating): the kernels then
    transpose each recurrent weight once for the block instead of once per call.

    Nothing can be cached across weight updates in general: in-place updates by fused optimizers
    do not even move a tensor's version counter. Nested blocks share the outermost one's cache.
    """
    global _frozen
    if _frozen is not None:
        yield
        return
    _frozen = {}
    try:
        yield
    finally:
        _frozen = None


def _cached(what: str, make, *sources: torch.Tensor) -> torch.Tensor:
    """``make(*sources)``, computed once per :func:`frozen_weights` block (always outside one)."""
    if _frozen is None:
        return make(*sources)
    key = (what, *map(id, sources))
    hit = _frozen.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], sources, strict=True)):
        hit = _frozen[key] = (sources, make(*(source.detach() for source in sources)))
    return hit[1]


def transposed(weight: torch.Tensor) -> torch.Tensor:
    """``weight.t().contiguous()``, once per block for each weight (every call outside one)."""
    return _cached("transpose", _transpose, weight)


def _transpose(weight: torch.Tensor) -> torch.Tensor:
    return weight.t().contiguous()


def active() -> bool:
    """Whether a :func:`frozen_weights` block is open."""
    return _frozen is not None
