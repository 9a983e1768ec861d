"""Stacks of dense layers (``Linear`` + activation, ...) in the native kernels.

One kernel call per layer forward (``y = act(x @ W^T + b)``) and per layer backward (``dW``,
``db`` and ``dx`` together), and one autograd node for the whole stack. torch's per-layer path
costs a ``Linear``, an activation and two autograd nodes per layer, and its CPU products (MKL) run
small MLP shapes at about half the speed of the kernels' (measured, AMD EPYC Zen 5, torch 2.13,
one thread: sb3's [64, 64] tanh MLP over a ``[16, 16, 128]`` minibatch, forward and backward,
205 us against 320; one acting step of 8 rows, 14 us either way).

Activations: identity, tanh (correctly rounded, as :func:`recurrl.nn.native.ops.tanh`), relu.
Every output element is the bias plus the products summed in order over the input features, so
a row's result does not depend on the number of rows: acting (a few rows) and training
(minibatches) compute the same numbers, bit for bit. They differ from torch's products by float
rounding only (``tests/test_nn_mlp.py`` holds both equal to the ``nn.Linear`` stack).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.native.build import library
from recurrl.nn.native.frozen import transposed

IDENTITY, TANH, RELU = 0, 1, 2
"""Activation codes of the kernels."""

MAX_MACS = 1 << 24
"""Largest layer (rows x inputs x outputs multiply-adds) this path takes: the kernels use one
thread, where torch's larger products may use several."""


def supports(x: Tensor, weights: list[Tensor]) -> bool:
    """Whether :func:`mlp_forward` can run these layers on ``x``."""
    if not (x.dtype == torch.float32 and x.is_cpu and library() is not None):
        return False
    rows = x.numel() // x.shape[-1] if x.dim() else 0
    return all(
        w.dtype == torch.float32 and w.is_cpu and rows * w.shape[0] * w.shape[1] <= MAX_MACS
        for w in weights
    )


def _forward(x: Tensor, codes: tuple[int, ...], params: tuple[Tensor, ...]) -> list[Tensor]:
    """Each layer's output ``[M, N]`` for ``x[M, K]`` (contiguous)."""
    lib, outputs = library(), []
    for index, code in enumerate(codes):
        weight, bias = params[2 * index], params[2 * index + 1]
        rows, (out_features, in_features) = x.shape[0], weight.shape
        y = x.new_empty(rows, out_features)
        weight_t, bias = transposed(weight), bias.detach().contiguous()  # held over the call
        lib.recurrl_linear_forward(
            rows,
            in_features,
            out_features,
            code,
            x.data_ptr(),
            weight_t.data_ptr(),
            bias.data_ptr(),
            y.data_ptr(),
        )
        outputs.append(y)
        x = y
    return outputs


class NativeMLPFunction(torch.autograd.Function):
    """``(x[M, K], codes, W_0, b_0, W_1, b_1, ...) -> y[M, N]``: the whole stack."""

    @staticmethod
    def forward(ctx, x: Tensor, codes: tuple[int, ...], *params: Tensor) -> Tensor:
        outputs = _forward(x, codes, params)
        ctx.codes = codes
        ctx.save_for_backward(x, *outputs, *params)
        return outputs[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        codes = ctx.codes
        x, *rest = ctx.saved_tensors
        outputs, params = rest[: len(codes)], rest[len(codes) :]
        grads: list[Tensor | None] = [None] * len(params)
        lib, rows = library(), x.shape[0]
        grad = grad.contiguous()
        for index in reversed(range(len(codes))):
            weight = params[2 * index].contiguous()
            out_features, in_features = weight.shape
            inputs = x if index == 0 else outputs[index - 1]
            dz = grad.new_empty(rows, out_features)
            dweight = grad.new_empty(out_features, in_features)
            dbias = grad.new_empty(out_features)
            scratch = grad.new_empty(out_features * rows)
            dx = None
            if index > 0 or ctx.needs_input_grad[0]:
                dx = grad.new_empty(rows, in_features)
            lib.recurrl_linear_backward(
                rows,
                in_features,
                out_features,
                codes[index],
                inputs.data_ptr(),
                outputs[index].data_ptr(),
                weight.data_ptr(),
                grad.data_ptr(),
                dz.data_ptr(),
                dweight.data_ptr(),
                dbias.data_ptr(),
                None if dx is None else dx.data_ptr(),
                scratch.data_ptr(),
            )
            grads[2 * index], grads[2 * index + 1] = dweight, dbias
            grad = dx
        return (grad, None, *grads)


def mlp_forward(x: Tensor, codes: tuple[int, ...], params: tuple[Tensor, ...]) -> Tensor:
    """``x[..., K]`` through the layers (``params``: ``W_0, b_0, W_1, b_1, ...``, ``W_i`` of
    shape ``[N_i, K_i]``; ``codes``: each layer's activation) -> ``[..., N_last]``.

    For a ``x`` and weights that :func:`supports` takes."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        y = NativeMLPFunction.apply(flat, codes, *params)
    else:
        y = _forward(flat, codes, params)[-1]
    return y.view(*lead, y.shape[-1])
