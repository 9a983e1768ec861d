"""Fused LSTM layer: forward loop, blocked backward coefficients, reverse-time loop, Function."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.fused.common import (
    constant,
    projection_grads,
    reset_steps,
    reversed_blocks,
    shifted_state,
)
from recurrl.nn.matmul import linear, linear_add, weight_grad


def lstm_loop(
    gates_x: Tensor, h: Tensor, c2: Tensor, keep: Tensor, resets: list[bool], weight_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """LSTM recurrence over a sequence, without autograd; gate order ``(i, f, g, o)``.

    Args:
        gates_x: input part of the gates, both biases included, ``g`` block doubled
            ``[T, B, 4H]``; overwritten with the activations.
        h: initial hidden state ``[B, H]``; c2: twice the initial cell state ``[B, H]``.
        keep: ``[T, B, 1]``; resets: per step, whether ``keep[t]`` has a zero.
        weight_hh: ``[4H, H]``, ``g`` rows doubled.

    Returns:
        ``(y, c2_all, tanh_c, act)``: outputs, twice the cell states and ``tanh`` of the cell
        states ``[T, B, H]`` of every step, and the activations ``[T, B, 4H]`` (``sigmoid`` of
        i, f, o and ``2 tanh`` of g).
    """
    steps, batch, hidden = gates_x.shape[0], h.shape[0], h.shape[1]
    act = gates_x  # (T, B, 4H): step t's activations overwrite its input part once it is used
    y = gates_x.new_empty(steps, batch, hidden)  # (T, B, H)
    c2_all, tanh_c = torch.empty_like(y), torch.empty_like(y)
    minus_one, minus_two = constant(h, -1.0), constant(h, -2.0)
    i_s, f_s, g2_s, o_s = (gate.unbind(0) for gate in act.split(hidden, dim=2))
    act_s, gates_x_s, keep_s = act.unbind(0), gates_x.unbind(0), keep.unbind(0)
    y_s, c2_s, tanh_c_s = y.unbind(0), c2_all.unbind(0), tanh_c.unbind(0)
    for t in range(steps):
        if resets[t]:
            h = h * keep_s[t]
            c2 = c2 * keep_s[t]
        torch.sigmoid(linear_add(h, weight_hh, gates_x_s[t]), out=act_s[t])  # (B, 4H)
        torch.add(minus_two, g2_s[t], alpha=4, out=g2_s[t])  # 2 tanh(u) = 4 sigmoid(2u) - 2
        c2 = torch.mul(f_s[t], c2, out=c2_s[t]).addcmul_(i_s[t], g2_s[t])
        torch.sigmoid(c2, out=tanh_c_s[t])
        torch.add(minus_one, tanh_c_s[t], alpha=2, out=tanh_c_s[t])  # 2 sigmoid(2c) - 1
        h = torch.mul(o_s[t], tanh_c_s[t], out=y_s[t])
    return y, c2_all, tanh_c, act


def lstm_backward_coefficients(
    act: Tensor, c2_prev: Tensor, tanh_c: Tensor, keep: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Step-local derivative factors of the backward loop, for a block of ``K`` steps at once.

    Args:
        act, tanh_c, keep: of the block, see :func:`lstm_loop`; c2_prev: ``2c`` entering each
            step of the block, masked ``[K, B, H]``.

    Returns:
        ``coef[K, B, 4H]`` with ``dgates = [dc2, dc2, dc2, dh] * coef`` (gradient of the
        pre-activations, ``g`` not doubled), ``dc2_from_dh[K, B, H]`` (``dc2 += dh *
        dc2_from_dh``) and ``dc2_carry[K, B, H]`` (``dc2_prev = dc2 * dc2_carry``, mask
        included); ``dc2`` is the gradient of ``2c``.
    """
    hidden = tanh_c.shape[-1]
    i, f, g2, o = act.split(hidden, dim=2)
    coef = torch.empty_like(act)  # (K, B, 4H)
    slope = torch.addcmul(act, act, act, value=-1)  # sigmoid' = s - s^2 (g block unused)
    torch.mul(g2, slope[..., :hidden], out=coef[..., :hidden])
    torch.mul(c2_prev, slope[..., hidden : 2 * hidden], out=coef[..., hidden : 2 * hidden])
    d_g = torch.addcmul(constant(act, 2.0), g2, g2, value=-0.5)  # d(2g)/dg_pre = 2 (1 - g^2)
    torch.mul(i, d_g, out=coef[..., 2 * hidden : 3 * hidden])
    torch.mul(tanh_c, slope[..., 3 * hidden :], out=coef[..., 3 * hidden :])
    dc2_from_dh = torch.addcmul(constant(act, 0.5), tanh_c, tanh_c, value=-0.5).mul_(o)
    return coef, dc2_from_dh, f * keep


def lstm_backward_loop(
    dy: Tensor,
    dh: Tensor,
    dc2: Tensor,
    saved: tuple[Tensor, Tensor, Tensor, Tensor],
    keep: Tensor,
    resets: list[bool],
    weight_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse-time loop: gradients of the pre-activation gates of every step.

    Args:
        dy: gradient of the outputs ``[T, B, H]``; dh, dc2: of the final ``h`` and ``2c``
            ``[B, H]``.
        saved: ``(act, c2_all, tanh_c, c2_first)`` from the forward (:func:`lstm_loop`).
        keep, resets: as in :func:`lstm_loop`; weight_hh: ``[4H, H]`` as the caller's.

    Returns:
        ``(dgates[T, B, 4H], dh0[B, H], dc2_0[B, H])``.
    """
    act, c2_all, tanh_c, c2_first = saved
    steps, batch, hidden = dy.shape
    dgates = torch.empty_like(act)  # (T, B, 4H)
    weight_hh_t = weight_hh.t()  # (H, 4H): dh_prev = dgates @ W_hh
    zeros = torch.zeros_like(dh)
    d_s, d_o_s = dgates.unbind(0), dgates[..., 3 * hidden :].unbind(0)
    d_ifg_s = dgates[..., : 3 * hidden].view(steps, batch, 3, hidden).unbind(0)  # (B, 3, H)
    dy_s, keep_s = dy.unbind(0), keep.unbind(0)
    dh = dh + dy[-1]
    for start, end in reversed_blocks(steps, batch * hidden):
        block = slice(start, end)
        c2_prev = shifted_state(c2_first, c2_all, keep, block)  # (K, B, H)
        coef, dc2_from_dh, dc2_carry = lstm_backward_coefficients(
            act[block], c2_prev, tanh_c[block], keep[block]
        )
        coef_ifg_s = coef[..., : 3 * hidden].view(end - start, batch, 3, hidden).unbind(0)
        coef_o_s, from_dh_s = coef[..., 3 * hidden :].unbind(0), dc2_from_dh.unbind(0)
        carry_s = dc2_carry.unbind(0)
        for t in range(end - 1, start - 1, -1):
            k = t - start
            dc2 = torch.addcmul(dc2, dh, from_dh_s[k])
            torch.mul(coef_ifg_s[k], dc2.unsqueeze(1), out=d_ifg_s[t])
            torch.mul(coef_o_s[k], dh, out=d_o_s[t])
            dc2 = dc2 * carry_s[k]
            if t == 0:
                dh = linear_add(d_s[0], weight_hh_t, zeros) * keep_s[0]
            elif resets[t]:
                dh = torch.addcmul(dy_s[t - 1], linear_add(d_s[t], weight_hh_t, zeros), keep_s[t])
            else:
                dh = linear_add(d_s[t], weight_hh_t, dy_s[t - 1])
    return dgates, dh, dc2


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer, ``(x, h0, c0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T, c_T)``.

    Arguments as :func:`~recurrl.nn.reference.lstm_layer_reference` (torch's layout).
    """

    @staticmethod
    def forward(ctx, x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        hidden = h0.shape[-1]
        gates_x = linear(x.flatten(0, 1), weight_ih, bias_ih + bias_hh)  # (T*B, 4H)
        gates_x[:, 2 * hidden : 3 * hidden] *= 2  # g pre-activation doubled, see module doc
        weight_hh_2g = weight_hh.clone()
        weight_hh_2g[2 * hidden : 3 * hidden] *= 2
        resets = reset_steps(keep)
        c2_first = c0 * 2
        y, c2_all, tanh_c, act = lstm_loop(
            gates_x.view(x.shape[0], x.shape[1], -1), h0, c2_first, keep, resets, weight_hh_2g
        )
        if ctx is not None:  # None: called by lstm_layer without autograd
            ctx.resets = resets
            saved = (x, y, c2_all, tanh_c, act, h0, c2_first, keep, weight_ih, weight_hh)
            ctx.save_for_backward(*saved)
        return y, y[-1].clone(), c2_all[-1] * 0.5

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last, dc_last):
        x, y, c2_all, tanh_c, act, h0, c2_first, keep, weight_ih, weight_hh = ctx.saved_tensors
        saved = (act, c2_all, tanh_c, c2_first)
        dgates, dh0, dc2_0 = lstm_backward_loop(
            dy.contiguous(), dh_last, dc_last * 0.5, saved, keep, ctx.resets, weight_hh
        )
        flat = dgates.flatten(0, 1)  # (T*B, 4H)
        dx, dweight_ih, dbias = projection_grads(ctx.needs_input_grad[0], flat, x, weight_ih)
        h_prev = shifted_state(h0, y, keep).flatten(0, 1)  # (T*B, H)
        dweight_hh = weight_grad(flat, h_prev)  # (4H, H)
        return dx, dh0, dc2_0 * 2, None, dweight_ih, dweight_hh, dbias, dbias


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
    """One LSTM layer, same arguments and result as ``reference.lstm_layer_reference``.

    Without autograd (acting, evaluation) the same loop runs without the Function's bookkeeping.
    """
    inputs = (x, h, c, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return LSTMFunction.apply(*inputs)
    with torch.no_grad():
        y, h, c = LSTMFunction.forward(None, *inputs)
    return y, h, c
