"""The matrix products of the fused recurrent layers, as ``x @ weight^T``-style calls.

Plain ``torch.addmm`` / ``torch.mm``; one place to name them so the loops in
:mod:`recurrl.nn.fused` read as the maths (``weight`` may be any strided view).
"""

from __future__ import annotations

import torch
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x[M, K] @ weight[N, K]^T + bias[N]`` -> ``[M, N]``."""
    if bias is None:
        return x @ weight.t()
    return torch.addmm(bias, x, weight.t())


def linear_add(x: Tensor, weight: Tensor, other: Tensor) -> Tensor:
    """``other[M, N] + x[M, K] @ weight[N, K]^T``."""
    return torch.addmm(other, x, weight.t())


SMALL_K = 16
"""Weight gradients with at most this many input columns are computed as ``(x^T @ g)^T``."""


def weight_grad(grad_out: Tensor, inputs: Tensor) -> Tensor:
    """Gradient of a weight: ``grad_out[M, N]^T @ inputs[M, K]`` -> ``[N, K]``, contiguous.

    With few input columns (an input projection from a small observation) CPU BLAS runs the
    product with a thin right operand many times slower than its transpose (measured, torch 2.13
    with MKL on AMD EPYC, one thread, ``N = 512, K = 2``: M = 256, 175 us against 23; M = 2048,
    2400 us against 169), so it is computed as ``(inputs^T @ grad_out)^T`` there.
    """
    if inputs.shape[1] <= SMALL_K:
        return (inputs.t() @ grad_out).t().contiguous()  # (N, K)
    return grad_out.t() @ inputs
