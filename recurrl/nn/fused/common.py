"""Helpers shared by the fused LSTM and GRU layers: reset steps, shifted states, blocks, grads."""

from __future__ import annotations

import torch
from torch import Tensor

from recurrl.nn.matmul import linear, weight_grad

BLOCK_ELEMENTS = 1 << 16
"""Elements of ``[K, B, H]`` per block of backward coefficients (see :func:`reversed_blocks`)."""


def reset_steps(keep: Tensor) -> list[bool]:
    """Per step, whether any row resets before it; ``keep`` is ``[T, B, 1]``.

    Reading the mask costs one host sync and a few ops: done on CPU for sequences only; a single
    step (acting) and other devices mask every step.
    """
    if keep.device.type != "cpu" or keep.shape[0] == 1:
        return [True] * keep.shape[0]
    return (keep == 0).flatten(1).any(dim=1).tolist()


def shifted_state(
    first: Tensor, sequence: Tensor, keep: Tensor, block: slice | None = None
) -> Tensor:
    """The masked state entering each step: ``keep[t] * (first if t == 0 else sequence[t-1])``.

    Args:
        first: state before the sequence ``[B, H]``.
        sequence: state after each step ``[T, B, H]``.
        keep: ``[T, B, 1]``.
        block: the steps ``t`` wanted (default all).

    Returns:
        ``[K, B, H]`` for the ``K`` steps of ``block``.
    """
    start, end, _ = (block or slice(None)).indices(sequence.shape[0])
    if start > 0:
        return sequence[start - 1 : end - 1] * keep[start:end]
    shifted = torch.empty_like(sequence[:end])  # (K, B, H)
    torch.mul(first, keep[0], out=shifted[0])
    torch.mul(sequence[: end - 1], keep[1:end], out=shifted[1:])
    return shifted


def reversed_blocks(steps: int, step_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` blocks covering ``range(steps)``, last block first.

    Each block holds about ``BLOCK_ELEMENTS`` elements of a ``[B, H]`` state (``step_size``):
    few ops per block, and the block's coefficients are still in cache when the loop reads them.
    """
    size = max(1, BLOCK_ELEMENTS // step_size)
    return [(max(0, end - size), end) for end in range(steps, 0, -size)]


def constant(like: Tensor, value: float) -> Tensor:
    """A 0-dim tensor: as an operand it is several times cheaper than a Python number."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def projection_grads(
    needs_dx: bool, dgates_x: Tensor, x: Tensor, weight_ih: Tensor
) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(dx[T, B, I], dW_ih[G, I], dbias[G])`` of ``x @ W_ih^T + bias``; ``dgates_x[T*B, G]``."""
    dx = linear(dgates_x, weight_ih.t()).view_as(x) if needs_dx else None
    return dx, weight_grad(dgates_x, x.flatten(0, 1)), column_sums(dgates_x)


def column_sums(matrix: Tensor) -> Tensor:
    """``matrix[M, N].sum(0)`` as a matrix-vector product: twice as fast on CPU for large M."""
    return matrix.t().mv(matrix.new_ones(matrix.shape[0]))
