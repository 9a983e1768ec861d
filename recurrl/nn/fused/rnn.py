"""Fused Elman (tanh) RNN layer: forward loop, reverse-time loop, autograd Function.

Same arguments and maths as :func:`recurrl.nn.elman.rnn_layer_reference`, ``h_t = tanh(W_ih x_t
+ b_ih + W_hh (keep_t h_{t-1}) + b_hh)``, following the pattern of :mod:`recurrl.nn.fused.gru`:
the input projection (both biases folded in) is one product over ``T * B`` rows before the loop,
the forward loop records no autograd graph and writes each step straight into the output buffer
(one ``addmm`` and one in-place ``tanh`` per step), and the backward loop is one product and two
pointwise ops per step, with ``dx``, ``dW_ih`` and ``dW_hh`` one product each after it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.fused.common import (
    column_sums,
    constant,
    projection_grads,
    reset_steps,
    shifted_state,
)
from recurrl.nn.matmul import linear, weight_grad


def rnn_loop(pre: Tensor, h: Tensor, keep: Tensor, resets: list[bool], weight_hh: Tensor) -> Tensor:
    """Elman recurrence over a sequence, without autograd.

    Args:
        pre: input part of the pre-activation incl. both biases ``[T, B, H]``; overwritten with
            the outputs.
        h: initial state ``[B, H]``; keep: ``[T, B, 1]``; resets: per step, whether ``keep[t]``
            has a zero; weight_hh: ``[H, H]``.

    Returns:
        ``y[T, B, H]`` (the buffer ``pre``).
    """
    weight_hh_t = weight_hh.t()
    pre_s, keep_s = pre.unbind(0), keep.unbind(0)
    for t in range(pre.shape[0]):
        if resets[t]:
            h = h * keep_s[t]
        h = torch.addmm(pre_s[t], h, weight_hh_t, out=pre_s[t]).tanh_()
    return pre


def rnn_backward_loop(
    dy: Tensor, dh: Tensor, y: Tensor, keep: Tensor, resets: list[bool], weight_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """Reverse-time loop: the gradient of every step's pre-activation, and of ``h0``.

    Args:
        dy: gradient of the outputs ``[T, B, H]``; dh: of the final state ``[B, H]``.
        y: outputs ``[T, B, H]``; keep, resets, weight_hh: as in :func:`rnn_loop`.

    Returns:
        ``(dpre[T, B, H], dh0[B, H])``.
    """
    steps = y.shape[0]
    dpre = torch.addcmul(constant(y, 1.0), y, y, value=-1)  # tanh' = 1 - y^2, then dpre in place
    dpre_s, dy_s, keep_s = dpre.unbind(0), dy.unbind(0), keep.unbind(0)
    dh = dh + dy[-1]
    for t in range(steps - 1, -1, -1):
        d = dpre_s[t].mul_(dh)
        back = d @ weight_hh  # (B, H): gradient of the masked h_{t-1}
        if resets[t] or t == 0:
            back = back * keep_s[t]
        dh = back if t == 0 else back.add_(dy_s[t - 1])
    return dpre, dh


class RNNFunction(torch.autograd.Function):
    """One Elman layer, ``(x, h0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T)``."""

    @staticmethod
    def forward(ctx, x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        pre = linear(x.flatten(0, 1), weight_ih, bias_ih + bias_hh)  # (T*B, H)
        resets = reset_steps(keep)
        y = rnn_loop(pre.view(x.shape[0], x.shape[1], -1), h0, keep, resets, weight_hh)
        if ctx is not None:  # None: called by rnn_layer without autograd
            ctx.resets = resets
            ctx.save_for_backward(x, y, h0, keep, weight_ih, weight_hh)
        return y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):
        x, y, h0, keep, weight_ih, weight_hh = ctx.saved_tensors
        dpre, dh0 = rnn_backward_loop(dy.contiguous(), dh_last, y, keep, ctx.resets, weight_hh)
        flat = dpre.flatten(0, 1)  # (T*B, H)
        dx, dweight_ih, dbias = projection_grads(ctx.needs_input_grad[0], flat, x, weight_ih)
        h_prev = shifted_state(h0, y, keep)  # (T, B, H)
        dweight_hh = weight_grad(flat, h_prev.flatten(0, 1))  # (H, H)
        return dx, dh0, None, dweight_ih, dweight_hh, dbias, column_sums(flat)


def rnn_layer(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One Elman layer, same arguments and result as ``elman.rnn_layer_reference``.

    Without autograd (acting, evaluation) the same loop runs without the Function's bookkeeping.
    """
    inputs = (x, h, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return RNNFunction.apply(*inputs)
    with torch.no_grad():
        y, h = RNNFunction.forward(None, *inputs)
    return y, h
