"""Fast reset-aware LSTM and GRU layers: whole-sequence autograd Functions with a hand-written backward.

Same maths as :mod:`recurrl.nn.reference` (the definition, tested against this). Why it is fast:

* The input projection ``x @ W_ih^T`` is one matrix product over ``T * B`` rows, outside the loop,
  and its gradient flows through ordinary autograd.
* The forward loop writes gate activations into preallocated ``[T, B, ...]`` buffers with a
  handful of in-place ops per step, and records no autograd graph.
* The backward loop is written by hand with precomputed ``[T, B, H]`` coefficients, so each step
  is ~5 ops instead of the ~25 autograd nodes of the unrolled reference; ``dW_hh`` is ONE matrix
  product over all steps at the end.
* Resets are a keep-mask on the state. On CPU the steps where no row resets are found once, and
  skip the masking; on other devices the mask is always applied (no host sync per call).

LSTM gates are kept in the order ``(o, i, f, g)`` internally (torch's ``(i, f, g, o)`` rolled by
one block): the three sigmoid gates are contiguous for the forward, and the three gates whose
gradient is ``dc * coefficient`` are contiguous for the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def reset_steps(keep: Tensor) -> list[bool]:
    """Per step, whether any row resets before it; ``keep`` is ``[T, B, 1]``.

    Reading the mask costs one host sync, cheap on CPU; elsewhere every step is masked.
    """
    if keep.device.type != "cpu":
        return [True] * keep.shape[0]
    return (keep == 0).flatten(1).any(dim=1).tolist()


def shifted_state(first: Tensor, sequence: Tensor, keep: Tensor) -> Tensor:
    """The masked state entering each step: ``keep[t] * (first if t == 0 else sequence[t-1])``.

    Args:
        first: state before the sequence ``[B, H]``.
        sequence: state after each step ``[T, B, H]``.
        keep: ``[T, B, 1]``.

    Returns:
        ``[T, B, H]``.
    """
    return torch.cat([first.unsqueeze(0), sequence[:-1]]) * keep


# ----------------------------------------------------------------------------------------- LSTM


def lstm_loop(
    gates_x: Tensor, h: Tensor, c: Tensor, keep: Tensor, resets: list[bool], weight_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM recurrence over a sequence, no autograd (gates in ``(o, i, f, g)`` order).

    Args:
        gates_x: input part of the gates incl. both biases ``[T, B, 4H]``.
        h, c: initial state ``[B, H]``.
        keep: ``[T, B, 1]``; resets: per step, whether ``keep[t]`` has a zero.
        weight_hh: ``[4H, H]`` in ``(o, i, f, g)`` order.

    Returns:
        ``(y[T, B, H], c_all[T, B, H], act[T, B, 4H])``: outputs, cell states and gate
        activations (sigmoid of o, i, f; tanh of g) of every step.
    """
    steps, hidden = gates_x.shape[0], h.shape[-1]
    act = torch.empty_like(gates_x)  # (T, B, 4H)
    y = gates_x.new_empty(steps, h.shape[0], hidden)  # (T, B, H)
    c_all = torch.empty_like(y)  # (T, B, H)
    weight_hh_t = weight_hh.t()
    for t in range(steps):
        if resets[t]:
            h = h * keep[t]
            c = c * keep[t]
        gates = torch.addmm(gates_x[t], h, weight_hh_t, out=act[t])  # (B, 4H)
        gates[:, : 3 * hidden].sigmoid_()
        gates[:, 3 * hidden :].tanh_()
        o, i, f, g = gates.split(hidden, dim=1)
        c = torch.mul(f, c, out=c_all[t]).addcmul_(i, g)
        h = torch.mul(o, torch.tanh(c), out=y[t])
    return y, c_all, act


def lstm_backward_coefficients(
    act: Tensor, c_all: Tensor, c0: Tensor, keep: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Step-local derivative factors for the backward loop, vectorized over time.

    Returns:
        ``coef[T, B, 4H]`` with ``dgates = [dh, dc, dc, dc] * coef`` (pre-activation gradient of
        ``o, i, f, g``), ``dc_from_dh[T, B, H]`` (``dc += dh * dc_from_dh``) and
        ``dc_carry[T, B, H]`` (``dc_prev = dc * dc_carry``, masked).
    """
    o, i, f, g = act.chunk(4, dim=2)
    tanh_c = torch.tanh(c_all)
    c_prev = shifted_state(c0, c_all, keep)
    coef = torch.cat(
        [tanh_c * o * (1 - o), g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=2
    )  # (T, B, 4H)
    return coef, o * (1 - tanh_c * tanh_c), f * keep


def lstm_backward_loop(
    dy: Tensor,
    dh: Tensor,
    dc: Tensor,
    coef: Tensor,
    dc_from_dh: Tensor,
    dc_carry: Tensor,
    keep: Tensor,
    resets: list[bool],
    weight_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse-time loop: gradients of the pre-activation gates of every step.

    Args:
        dy: gradient of the outputs ``[T, B, H]``; dh, dc: of the final state ``[B, H]``.
        coef, dc_from_dh, dc_carry: from :func:`lstm_backward_coefficients`.
        keep, resets, weight_hh: as in :func:`lstm_loop`.

    Returns:
        ``(dgates[T, B, 4H], dh0[B, H], dc0[B, H])``.
    """
    steps, batch, hidden = dy.shape
    dgates = coef.new_empty(steps, batch, 4 * hidden)  # (T, B, 4H)
    dh = dh + dy[-1]
    for t in range(steps - 1, -1, -1):
        dc = torch.addcmul(dc, dh, dc_from_dh[t])
        d_t = dgates[t]  # (B, 4H)
        torch.mul(coef[t, :, :hidden], dh, out=d_t[:, :hidden])
        gate_view = d_t[:, hidden:].view(batch, 3, hidden)  # (B, 3, H)
        torch.mul(coef[t, :, hidden:].view(batch, 3, hidden), dc.unsqueeze(1), out=gate_view)
        dc = dc * dc_carry[t]
        below = dy[t - 1] if t > 0 else dh.new_zeros(())
        if resets[t]:
            dh = torch.addcmul(below, d_t @ weight_hh, keep[t])
        else:
            dh = torch.addmm(below.expand_as(dh), d_t, weight_hh)
    return dgates, dh, dc


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer ``(gates_x, h0, c0, keep, weight_hh) -> (y, h_T, c_T)``, gates ``(o,i,f,g)``."""

    @staticmethod
    def forward(ctx, gates_x, h0, c0, keep, weight_hh):  # noqa: D102
        resets = reset_steps(keep)
        y, c_all, act = lstm_loop(gates_x, h0, c0, keep, resets, weight_hh)
        ctx.resets = resets
        ctx.save_for_backward(y, c_all, act, h0, c0, keep, weight_hh)
        return y, y[-1].clone(), c_all[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last, dc_last):  # noqa: D102
        y, c_all, act, h0, c0, keep, weight_hh = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy
        dh_last = torch.zeros_like(h0) if dh_last is None else dh_last
        dc_last = torch.zeros_like(c0) if dc_last is None else dc_last
        coef, dc_from_dh, dc_carry = lstm_backward_coefficients(act, c_all, c0, keep)
        dgates, dh0, dc0 = lstm_backward_loop(
            dy, dh_last, dc_last, coef, dc_from_dh, dc_carry, keep, ctx.resets, weight_hh
        )
        h_prev = shifted_state(h0, y, keep).flatten(0, 1)  # (T*B, H)
        dweight_hh = dgates.flatten(0, 1).t() @ h_prev  # (4H, H)
        return dgates, dh0, dc0, None, dweight_hh


# ------------------------------------------------------------------------------------------ GRU


def gru_loop(
    gates_x: Tensor, h: Tensor, keep: Tensor, resets: list[bool], weight_hh: Tensor, bias_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """GRU recurrence over a sequence, no autograd (torch's gate order r, z, n).

    Args:
        gates_x: input part of the gates incl. ``bias_ih`` ``[T, B, 3H]``.
        h: initial state ``[B, H]``.
        keep: ``[T, B, 1]``; resets: per step, whether ``keep[t]`` has a zero.
        weight_hh: ``[3H, H]``; bias_hh: ``[3H]``.

    Returns:
        ``(y[T, B, H], act[T, B, 3H], gates_h[T, B, 3H])``: outputs, activations ``r, z, n`` and
        the recurrent part of the gates of every step.
    """
    steps, hidden = gates_x.shape[0], h.shape[-1]
    act = torch.empty_like(gates_x)  # (T, B, 3H)
    gates_h = torch.empty_like(gates_x)  # (T, B, 3H)
    y = gates_x.new_empty(steps, h.shape[0], hidden)  # (T, B, H)
    weight_hh_t = weight_hh.t()
    two = 2 * hidden
    for t in range(steps):
        if resets[t]:
            h = h * keep[t]
        gh = torch.addmm(bias_hh, h, weight_hh_t, out=gates_h[t])  # (B, 3H)
        a_t = act[t]
        rz = torch.add(gates_x[t, :, :two], gh[:, :two], out=a_t[:, :two]).sigmoid_()
        n = torch.addcmul(gates_x[t, :, two:], rz[:, :hidden], gh[:, two:], out=a_t[:, two:])
        n.tanh_()
        h = torch.lerp(n, h, rz[:, hidden:], out=y[t])
    return y, act, gates_h


def gru_backward_coefficients(
    act: Tensor, gates_h: Tensor, h_prev: Tensor, keep: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Step-local derivative factors for the backward loop, vectorized over time.

    Returns:
        ``coef_h[T, B, 3H]`` with ``dgates_h = dh * coef_h`` (gradient of the recurrent gates),
        ``dn_pre[T, B, H]`` with ``dgates_x[n] = dh * dn_pre`` and ``carry[T, B, H]`` (``dh_prev
        = dh * carry + dgates_h @ W_hh`` before the mask).
    """
    r, z, n = act.chunk(3, dim=2)
    dn_pre = (1 - z) * (1 - n * n)
    coef_h = torch.cat(
        [
            dn_pre * gates_h[..., 2 * r.shape[-1] :] * r * (1 - r),
            (h_prev - n) * z * (1 - z),
            dn_pre * r,
        ],
        dim=2,
    )  # (T, B, 3H)
    return coef_h, dn_pre, z


def gru_backward_loop(
    dy: Tensor,
    dh: Tensor,
    coef_h: Tensor,
    carry: Tensor,
    keep: Tensor,
    resets: list[bool],
    weight_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse-time loop: gradient of the recurrent gates and of the output of every step.

    Returns:
        ``(dgates_h[T, B, 3H], dh_all[T, B, H], dh0[B, H])`` where ``dh_all[t]`` is the total
        gradient of ``h_t``.
    """
    steps, batch, hidden = dy.shape
    dgates_h = coef_h.new_empty(steps, batch, 3 * hidden)  # (T, B, 3H)
    dh_all = torch.empty_like(dy)  # (T, B, H)
    dh = torch.add(dy[-1], dh, out=dh_all[-1])
    for t in range(steps - 1, -1, -1):
        d_t = dgates_h[t]  # (B, 3H)
        torch.mul(coef_h[t].view(batch, 3, hidden), dh.unsqueeze(1), out=d_t.view(batch, 3, hidden))
        if t == 0:
            dh = torch.addmm(dh * carry[0], d_t, weight_hh) * keep[0]
        elif resets[t]:
            direct = torch.addmm(dh * carry[t], d_t, weight_hh)
            dh = torch.addcmul(dy[t - 1], direct, keep[t], out=dh_all[t - 1])
        else:
            direct = torch.addcmul(dy[t - 1], dh, carry[t])
            dh = torch.addmm(direct, d_t, weight_hh, out=dh_all[t - 1])
    return dgates_h, dh_all, dh


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
    """One LSTM layer; same signature and result as :func:`~recurrl.nn.reference.lstm_layer_reference`.

    Without autograd (acting, evaluation) the plain loop runs without the Function's overhead.
    """
    steps, batch, hidden = x.shape[0], x.shape[1], h.shape[-1]
    # torch's (i, f, g, o) rolled by one block is (o, i, f, g); autograd maps the gradient back.
    weight_ih, weight_hh = weight_ih.roll(hidden, 0), weight_hh.roll(hidden, 0)
    bias = (bias_ih + bias_hh).roll(hidden, 0)
    gates_x = torch.addmm(bias, x.flatten(0, 1), weight_ih.t()).view(steps, batch, -1)  # (T, B, 4H)
    if torch.is_grad_enabled() and _any_requires_grad(gates_x, h, c, weight_hh):
        return LSTMFunction.apply(gates_x, h, c, keep, weight_hh)
    y, c_all, _ = lstm_loop(gates_x, h, c, keep, reset_steps(keep), weight_hh)
    return y, y[-1], c_all[-1]


def _any_requires_grad(*tensors: Tensor) -> bool:
    return any(tensor.requires_grad for tensor in tensors)


class GRUFunction(torch.autograd.Function):
    """One GRU layer ``(gates_x, h0, keep, weight_hh, bias_hh) -> (y, h_T)``."""

    @staticmethod
    def forward(ctx, gates_x, h0, keep, weight_hh, bias_hh):  # noqa: D102
        resets = reset_steps(keep)
        y, act, gates_h = gru_loop(gates_x, h0, keep, resets, weight_hh, bias_hh)
        ctx.resets = resets
        ctx.save_for_backward(y, act, gates_h, h0, keep, weight_hh)
        return y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):  # noqa: D102
        y, act, gates_h, h0, keep, weight_hh = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy
        dh_last = torch.zeros_like(h0) if dh_last is None else dh_last
        h_prev = shifted_state(h0, y, keep)  # (T, B, H)
        coef_h, dn_pre, carry = gru_backward_coefficients(act, gates_h, h_prev, keep)
        dgates_h, dh_all, dh0 = gru_backward_loop(
            dy, dh_last, coef_h, carry, keep, ctx.resets, weight_hh
        )
        hidden = h0.shape[-1]
        dgates_x = dgates_h.clone()  # (T, B, 3H)
        torch.mul(dh_all, dn_pre, out=dgates_x[..., 2 * hidden :])
        flat_dgates_h = dgates_h.flatten(0, 1)  # (T*B, 3H)
        dweight_hh = flat_dgates_h.t() @ h_prev.flatten(0, 1)  # (3H, H)
        return dgates_x, dh0, None, dweight_hh, flat_dgates_h.sum(0)


def gru_layer(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One GRU layer; same signature and result as :func:`~recurrl.nn.reference.gru_layer_reference`.

    Without autograd (acting, evaluation) the plain loop runs without the Function's overhead.
    """
    steps, batch = x.shape[0], x.shape[1]
    gates_x = torch.addmm(bias_ih, x.flatten(0, 1), weight_ih.t()).view(
        steps, batch, -1
    )  # (T, B, 3H)
    if torch.is_grad_enabled() and _any_requires_grad(gates_x, h, weight_hh, bias_hh):
        return GRUFunction.apply(gates_x, h, keep, weight_hh, bias_hh)
    y, _, _ = gru_loop(gates_x, h, keep, reset_steps(keep), weight_hh, bias_hh)
    return y, y[-1]
