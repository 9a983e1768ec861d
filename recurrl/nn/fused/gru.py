"""Fused GRU layer: forward loop, blocked backward coefficients, reverse-time loop, Function."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.fused.common import (
    column_sums,
    constant,
    projection_grads,
    reset_steps,
    reversed_blocks,
    shifted_state,
)
from recurrl.nn.matmul import linear, linear_add, weight_grad


def gru_loop(
    gates_x: Tensor,
    h: Tensor,
    keep: Tensor,
    resets: list[bool],
    weight_hh: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """GRU recurrence over a sequence, without autograd; gate order ``(r, z, n)``.

    Args:
        gates_x: input part of the gates incl. ``bias_ih``, ``n`` block doubled, ``[T, B, 3H]``;
            overwritten with the activations.
        h: initial state ``[B, H]``.
        keep: ``[T, B, 1]``; resets: per step, whether ``keep[t]`` has a zero.
        weight_hh: ``[3H, H]``; bias_hh: ``[3H]``.

    Returns:
        ``(y[T, B, H], act[T, B, 3H], gates_hn[T, B, H])``: outputs, activations ``r, z, n`` and
        the ``n`` block of the recurrent gates of every step.
    """
    steps, batch, hidden = gates_x.shape[0], h.shape[0], h.shape[1]
    act = gates_x  # (T, B, 3H): activations overwrite the input part, elementwise in place
    y = gates_x.new_empty(steps, batch, hidden)  # (T, B, H)
    gates_hn = []
    minus_one = constant(h, -1.0)
    two = 2 * hidden
    rz_s, n_s = act[..., :two].unbind(0), act[..., two:].unbind(0)
    y_s, keep_s = y.unbind(0), keep.unbind(0)
    for t in range(steps):
        if resets[t]:
            h = h * keep_s[t]
        gh = linear(h, weight_hh, bias_hh)  # (B, 3H)
        gh_n = gh[:, two:]
        gates_hn.append(gh_n)
        rz = rz_s[t].add_(gh[:, :two]).sigmoid_()
        n = n_s[t].addcmul_(rz[:, :hidden], gh_n, value=2).sigmoid_()
        torch.add(minus_one, n, alpha=2, out=n)  # tanh(u) = 2 sigmoid(2u) - 1
        h = torch.lerp(n, h, rz[:, hidden:], out=y_s[t])  # (1 - z) n + z h
    return y, act, torch.stack(gates_hn)


def gru_backward_coefficients(
    act: Tensor, gates_hn: Tensor, h_prev: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Step-local derivative factors of the backward loop, for a block of ``K`` steps at once.

    Args:
        act, gates_hn: of the block, see :func:`gru_loop`; h_prev: ``h`` entering each step of
            the block, masked ``[K, B, H]``.

    Returns:
        ``coef_h[K, B, 3H]`` with ``dgates_h = dh * coef_h`` (gradient of the recurrent gates),
        ``coef_n[K, B, H]`` with ``dgates_x[n] = dh * coef_n``, and ``z[K, B, H]`` (``dh_prev =
        keep * (dh * z + dgates_h @ W_hh)``).
    """
    hidden = h_prev.shape[-1]
    r, z, n = act.split(hidden, dim=2)
    rz = act[..., : 2 * hidden]  # (K, B, 2H)
    slope = torch.addcmul(rz, rz, rz, value=-1)  # sigmoid' = s - s^2
    tanh_slope = torch.addcmul(constant(act, 1.0), n, n, value=-1)  # 1 - n^2
    coef_n = torch.addcmul(tanh_slope, tanh_slope, z, value=-1)  # (1 - z) (1 - n^2)
    coef_h = torch.empty_like(act)  # (K, B, 3H)
    torch.mul(coef_n * gates_hn, slope[..., :hidden], out=coef_h[..., :hidden])
    torch.mul(h_prev - n, slope[..., hidden:], out=coef_h[..., hidden : 2 * hidden])
    torch.mul(coef_n, r, out=coef_h[..., 2 * hidden :])
    return coef_h, coef_n, z


def gru_backward_loop(
    dy: Tensor,
    dh: Tensor,
    saved: tuple[Tensor, Tensor, Tensor],
    keep: Tensor,
    resets: list[bool],
    weight_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse-time loop: gradients of the input and recurrent gates of every step.

    Args:
        dy: gradient of the outputs ``[T, B, H]``; dh: of the final state ``[B, H]``.
        saved: ``(act, gates_hn, h_prev)``: from :func:`gru_loop`, and the masked state entering
            each step ``[T, B, H]``.
        keep, resets, weight_hh: as in :func:`gru_loop`.

    Returns:
        ``(dgates_x[T, B, 3H], dgates_h[T, B, 3H], dh0[B, H])``.
    """
    act, gates_hn, h_prev = saved
    steps, batch, hidden = dy.shape
    dgates_x, dgates_h = torch.empty_like(act), torch.empty_like(act)  # (T, B, 3H)
    weight_hh_t = weight_hh.t()  # (H, 3H): dh_prev = dgates_h @ W_hh
    d_s, d3_s = dgates_h.unbind(0), dgates_h.view(steps, batch, 3, hidden).unbind(0)
    dy_s, keep_s = dy.unbind(0), keep.unbind(0)
    dh = dh + dy[-1]
    for start, end in reversed_blocks(steps, batch * hidden):
        block = slice(start, end)
        coef_h, coef_n, z = gru_backward_coefficients(act[block], gates_hn[block], h_prev[block])
        coef_s, z_s = coef_h.view(end - start, batch, 3, hidden).unbind(0), z.unbind(0)
        dh_block = []  # gradient of h_t for t = end - 1 .. start
        for t in range(end - 1, start - 1, -1):
            k = t - start
            dh_block.append(dh)
            torch.mul(coef_s[k], dh.unsqueeze(1), out=d3_s[t])
            if t == 0:
                dh = linear_add(d_s[0], weight_hh_t, dh * z_s[0]) * keep_s[0]
            elif resets[t]:
                direct = linear_add(d_s[t], weight_hh_t, dh * z_s[k])
                dh = torch.addcmul(dy_s[t - 1], direct, keep_s[t])
            else:
                dh = linear_add(d_s[t], weight_hh_t, torch.addcmul(dy_s[t - 1], dh, z_s[k]))
        # r and z blocks of the input gates' gradient equal the recurrent ones; n differs by r.
        dgates_x[block, :, : 2 * hidden] = dgates_h[block, :, : 2 * hidden]
        torch.mul(torch.stack(dh_block[::-1]), coef_n, out=dgates_x[block, :, 2 * hidden :])
    return dgates_x, dgates_h, dh


class GRUFunction(torch.autograd.Function):
    """One GRU layer, ``(x, h0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T)``.

    Arguments as :func:`~recurrl.nn.reference.gru_layer_reference` (torch's layout).
    """

    @staticmethod
    def forward(ctx, x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        gates_x = linear(x.flatten(0, 1), weight_ih, bias_ih)  # (T*B, 3H)
        gates_x[:, 2 * h0.shape[-1] :] *= 2  # n input part doubled, see module doc
        resets = reset_steps(keep)
        y, act, gates_hn = gru_loop(
            gates_x.view(x.shape[0], x.shape[1], -1), h0, keep, resets, weight_hh, bias_hh
        )
        if ctx is not None:  # None: called by gru_layer without autograd
            ctx.resets = resets
            ctx.save_for_backward(x, y, act, gates_hn, h0, keep, weight_ih, weight_hh)
        return y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):
        x, y, act, gates_hn, h0, keep, weight_ih, weight_hh = ctx.saved_tensors
        h_prev = shifted_state(h0, y, keep)  # (T, B, H)
        dgates_x, dgates_h, dh0 = gru_backward_loop(
            dy.contiguous(), dh_last, (act, gates_hn, h_prev), keep, ctx.resets, weight_hh
        )
        flat_x, flat_h = dgates_x.flatten(0, 1), dgates_h.flatten(0, 1)  # (T*B, 3H)
        dx, dweight_ih, dbias_ih = projection_grads(ctx.needs_input_grad[0], flat_x, x, weight_ih)
        dweight_hh = weight_grad(flat_h, h_prev.flatten(0, 1))  # (3H, H)
        return dx, dh0, None, dweight_ih, dweight_hh, dbias_ih, column_sums(flat_h)


def gru_layer(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One GRU layer, same arguments and result as ``reference.gru_layer_reference``.

    Without autograd (acting, evaluation) the same loop runs without the Function's bookkeeping.
    """
    inputs = (x, h, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return GRUFunction.apply(*inputs)
    with torch.no_grad():
        y, h = GRUFunction.forward(None, *inputs)
    return y, h
