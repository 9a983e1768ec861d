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


def weight_grad(grad_out: Tensor, inputs: Tensor) -> Tensor:
    """Gradient of a weight: ``grad_out[M, N]^T @ inputs[M, K]`` -> ``[N, K]``."""
    return grad_out.t() @ inputs
