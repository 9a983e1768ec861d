"""Whole-tensor kernels of ``kernels.c``: a vectorised tanh and a blocked 2-d transpose.

Both take float32 CPU tensors and need the library (:func:`supports` says whether a tensor can
go); callers fall back to torch otherwise. Measured on AMD EPYC Zen 5 (AVX-512), torch 2.13, one
thread: tanh of 16,384 elements 10 us against ``torch.tanh``'s 36 us; the transpose of a
``[128, 512]`` matrix 14 us against ``t().contiguous()``'s 26-44 us.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recurrl.nn.native.build import library

MAX_ELEMENTS = (1 << 31) - 1
"""The kernels count elements in a C ``int``."""

_tanh_is_fast: bool | None = None


def supports(x: Tensor) -> bool:
    """Whether the kernels can take ``x`` (float32 on CPU, not too big, library built)."""
    return (  # the cheap checks (~0.2 us): acting calls this for every small activation
        x.dtype == torch.float32
        and x.is_cpu
        and x.numel() <= MAX_ELEMENTS
        and library() is not None
    )


def tanh_is_fast() -> bool:
    """Whether :func:`tanh` beats ``torch.tanh`` here: the library is built with AVX2 or AVX-512
    (SSE2 builds run it 1.4x slower than torch)."""
    global _tanh_is_fast
    if _tanh_is_fast is None:
        _tanh_is_fast = library() is not None and library().recurrl_tanh_is_fast() == 1
    return _tanh_is_fast


def tanh(x: Tensor) -> Tensor:
    """``torch.tanh(x)`` for a tensor :func:`supports` takes; a new contiguous tensor.

    Rounded from a double-precision tanh: the float nearest the exact value (no miss in 2M
    random inputs), which ``torch.tanh`` misses in 0.04% of them; ``x`` itself for tiny ``|x|``,
    exactly +-1 from ``|x| > 9.011``; odd, so ``-0.0`` stays ``-0.0``; NaN stays NaN.
    """
    x = x.contiguous()
    y = torch.empty_like(x)
    library().recurrl_tanh(x.numel(), x.data_ptr(), y.data_ptr())
    return y


def transpose(matrix: Tensor) -> Tensor:
    """``matrix.t().contiguous()`` for a 2-d tensor :func:`supports` takes."""
    rows, columns = matrix.shape
    matrix = matrix.contiguous()
    out = matrix.new_empty(columns, rows)
    library().recurrl_transpose(rows, columns, matrix.data_ptr(), out.data_ptr())
    return out
