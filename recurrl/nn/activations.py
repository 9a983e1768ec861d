"""Activations for MLPs with a faster path for float32 CPU tensors.

``torch.tanh`` is slow on some CPUs (measured, AMD EPYC Zen 5, torch 2.13, one thread: 2.1 ns per
element, 36 us for a ``[16, 16, 64]`` minibatch activation, where ``torch.sigmoid`` takes 4).
:class:`Tanh` runs the native kernels' vectorised tanh (:func:`recurrl.nn.native.ops.tanh`, 10 us
there) where that pays: from :data:`NATIVE_TANH_MIN_ELEMENTS` elements when autograd records it (a
Python-defined autograd node costs ~10 us), from :data:`NATIVE_TANH_MIN_ELEMENTS_NO_GRAD` without.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recurrl.nn.native import ops

NATIVE_TANH_MIN_ELEMENTS = 4096
"""Smallest input that :func:`tanh` sends to the native kernel when autograd records the call
(measured: 4,096 elements forward and backward, 21.5 us against torch's 22.4; 16,384, 33 against
53)."""
NATIVE_TANH_MIN_ELEMENTS_NO_GRAD = 512
"""The same without autograd: from one acting step of 8 envs (8 x 64), so that acting and the
minibatches it is trained on compute the same tanh (measured through :class:`Tanh`: 512
elements, 2.2 us against 2.1; 1,024, 2.5 against 3.2). torch's differs from the native one by an
ulp in 0.04% of the elements, enough to send a training run elsewhere: with 1,024 here the GRU
run of ``tests/test_learning.py`` (seed 1) ends at 273 instead of 500."""


class NativeTanhFunction(torch.autograd.Function):
    """``tanh(x)`` by the native kernel; the gradient from the saved output, as torch's."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = ops.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: Tensor) -> Tensor:
    """``torch.tanh(x)``, by the native kernel for large enough float32 CPU tensors where the
    kernels are built with AVX2 or AVX-512 (:func:`recurrl.nn.native.ops.tanh`: correctly
    rounded, so equal to torch's but where torch's misses by one ulp, 0.04% of the elements)."""
    if x.numel() < NATIVE_TANH_MIN_ELEMENTS_NO_GRAD or not (ops.supports(x) and ops.tanh_is_fast()):
        return torch.tanh(x)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return ops.tanh(x)
    if x.numel() >= NATIVE_TANH_MIN_ELEMENTS:
        return NativeTanhFunction.apply(x)
    return torch.tanh(x)


class Tanh(nn.Tanh):
    """``nn.Tanh`` computed by :func:`tanh` (no parameters, same results up to float rounding)."""

    forward = staticmethod(tanh)  # no method frame in between: acting calls it on tiny tensors
