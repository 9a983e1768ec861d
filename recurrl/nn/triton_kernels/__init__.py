"""Reset-aware LSTM and GRU layers as Triton GPU kernels (``impl="triton"``).

Same arguments, results and gradients as :mod:`recurrl.nn.fused` (tested against the
reference), one kernel launch per layer for the whole sequence instead of one matrix product
and several pointwise ops per step: each program keeps a block of batch rows for all ``T``
steps, computing the recurrent product with ``tl.dot`` and the gate maths fused, the reset mask
applied before each step (:mod:`.kernels` says how, and the memory layout). The input
projection and, in the backward, ``dx`` and every weight gradient are large torch GEMMs over
``[T * B]`` rows around the kernels (:mod:`.layers`).

triton is imported only when a layer runs: importing :mod:`recurrl.nn` works without it, and
:func:`available` looks it up without importing it. The kernels run on CUDA devices, float32
(``tl.dot`` in tf32 when ``torch.backends.cudnn.allow_tf32``, as ``torch.nn.LSTM``) and float64;
CPU tensors only under ``TRITON_INTERPRET=1`` (triton's numpy interpreter, for tests).
"""

from __future__ import annotations

import torch
from torch import Tensor

from recurrl.nn.triton_kernels.support import (
    DTYPES,
    available,
    installed,
    interpreting,
    unavailable_reason,
)

__all__ = [
    "DTYPES",
    "available",
    "gru_layer",
    "installed",
    "interpreting",
    "lstm_layer",
    "supports",
    "unavailable_reason",
]


def supports(x: Tensor) -> bool:
    """Whether the kernels can run ``x`` (its device and dtype). float64 runs in the CPU
    interpreter only: on an H200 with triton 3.6 the float64 ``tl.dot`` failed to compile
    (docs/bench/gpu/parity.txt), so on CUDA the kernels take float32."""
    if x.dtype == torch.float64 and x.device.type == "cuda":
        return False
    return x.dtype in DTYPES and available(x.device)


def lstm_layer(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer, same arguments and result as ``reference.lstm_layer_reference``."""
    from recurrl.nn.triton_kernels import layers

    inputs = (x, h, c, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return layers.TritonLSTMFunction.apply(*inputs)
    with torch.no_grad():
        hs, cs, _, _ = layers.lstm_forward(*inputs)
    return hs[1:], hs[-1].clone(), cs[-1].clone()


def gru_layer(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One GRU layer, same arguments and result as ``reference.gru_layer_reference``."""
    from recurrl.nn.triton_kernels import layers

    inputs = (x, h, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return layers.TritonGRUFunction.apply(*inputs)
    with torch.no_grad():
        hs, _, _, _ = layers.gru_forward(*inputs)
    return hs[1:], hs[-1].clone()
