"""Fast reset-aware LSTM and GRU layers: whole-sequence Functions with a hand-written backward.

Same maths and arguments as :mod:`recurrl.nn.reference` (the definition; ``tests/test_nn_fast.py``
holds the two equal). Why this is faster on CPU, each point measured:

* The input projection ``x @ W_ih^T`` is one matrix product over ``T * B`` rows before the loop;
  ``dx``, ``dW_ih`` and ``dW_hh`` are one product each after the backward loop. Products go
  through :mod:`recurrl.nn.matmul` (oneDNN on CPU, where it beats MKL).
* The forward loop records no autograd graph: one matrix product and seven ``out=``/in-place
  pointwise ops per step into preallocated ``[T, B, ...]`` buffers, with every per-step view made
  before the loop (indexing in the loop costs about as much as a pointwise op).
* The backward loop is written by hand: one product and ~4 pointwise ops per step (autograd
  through the unrolled reference runs ~25 nodes per step). Its step-local coefficients are
  computed for blocks of steps at once, sized to stay in cache (:data:`BLOCK_ELEMENTS`).
* ``tanh(u)`` is computed as ``2 * sigmoid(2u) - 1``: torch's CPU ``tanh`` costs ~7x ``sigmoid``
  per element. The LSTM doubles its ``g`` pre-activation (input part once per call, ``W_hh`` rows
  once per call) and carries ``2c``; the GRU doubles its ``n`` input part and uses
  ``addcmul(value=2)``. Doubling is exact in floating point.
* Resets are a keep-mask on the state. On CPU the steps where no row resets are found once and
  skip the masking; on other devices every step is masked (no host sync).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.matmul import linear, linear_add_for, linear_bias_for, weight_grad

BLOCK_ELEMENTS = 1 << 16
"""Elements of ``[K, B, H]`` per block of backward coefficients (see :func:`reversed_blocks`)."""


def reset_steps(keep: Tensor) -> list[bool]:
    """Per step, whether any row resets before it; ``keep`` is ``[T, B, 1]``.

    Reading the mask costs one host sync and a few ops: done on CPU for sequences only; a single
    step (acting) and other devices mask every step.
    """
    if keep.device.type != "cpu" or keep.shape[0] == 1:
        return [True] * keep.shape[0]
    return (keep == 0).flatten(1).any(dim=1).tolist()


def shifted_state(
    first: Tensor, sequence: Tensor, keep: Tensor, block: slice | None = None
) -> Tensor:
    """The masked state entering each step: ``keep[t] * (first if t == 0 else sequence[t-1])``.

    Args:
        first: state before the sequence ``[B, H]``.
        sequence: state after each step ``[T, B, H]``.
        keep: ``[T, B, 1]``.
        block: the steps ``t`` wanted (default all).

    Returns:
        ``[K, B, H]`` for the ``K`` steps of ``block``.
    """
    start, end, _ = (block or slice(None)).indices(sequence.shape[0])
    if start > 0:
        return sequence[start - 1 : end - 1] * keep[start:end]
    shifted = torch.empty_like(sequence[:end])  # (K, B, H)
    torch.mul(first, keep[0], out=shifted[0])
    torch.mul(sequence[: end - 1], keep[1:end], out=shifted[1:])
    return shifted


def reversed_blocks(steps: int, step_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` blocks covering ``range(steps)``, last block first.

    Each block holds about ``BLOCK_ELEMENTS`` elements of a ``[B, H]`` state (``step_size``):
    few ops per block, and the block's coefficients are still in cache when the loop reads them.
    """
    size = max(1, BLOCK_ELEMENTS // step_size)
    return [(max(0, end - size), end) for end in range(steps, 0, -size)]


def _constant(like: Tensor, value: float) -> Tensor:
    """A 0-dim tensor: as an operand it is several times cheaper than a Python number."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _projection_grads(
    needs_dx: bool, dgates_x: Tensor, x: Tensor, weight_ih: Tensor
) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(dx[T, B, I], dW_ih[G, I], dbias[G])`` of ``x @ W_ih^T + bias``; ``dgates_x[T*B, G]``."""
    dx = linear(dgates_x, weight_ih.t()).view_as(x) if needs_dx else None
    return dx, weight_grad(dgates_x, x.flatten(0, 1)), column_sums(dgates_x)


def column_sums(matrix: Tensor) -> Tensor:
    """``matrix[M, N].sum(0)`` as a matrix-vector product: twice as fast on CPU for large M."""
    return matrix.t().mv(matrix.new_ones(matrix.shape[0]))


# ----------------------------------------------------------------------------------------- LSTM


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
    minus_one, minus_two = _constant(h, -1.0), _constant(h, -2.0)
    linear_add = linear_add_for(h, batch * hidden * 4 * hidden)
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
    d_g = torch.addcmul(_constant(act, 2.0), g2, g2, value=-0.5)  # d(2g)/dg_pre = 2 (1 - g^2)
    torch.mul(i, d_g, out=coef[..., 2 * hidden : 3 * hidden])
    torch.mul(tanh_c, slope[..., 3 * hidden :], out=coef[..., 3 * hidden :])
    dc2_from_dh = torch.addcmul(_constant(act, 0.5), tanh_c, tanh_c, value=-0.5).mul_(o)
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
    linear_add = linear_add_for(dy, batch * hidden * 4 * hidden)
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
        dx, dweight_ih, dbias = _projection_grads(ctx.needs_input_grad[0], flat, x, weight_ih)
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


# ------------------------------------------------------------------------------------------ GRU


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
    minus_one = _constant(h, -1.0)
    linear_bias = linear_bias_for(h, batch * hidden * 3 * hidden)
    two = 2 * hidden
    rz_s, n_s = act[..., :two].unbind(0), act[..., two:].unbind(0)
    y_s, keep_s = y.unbind(0), keep.unbind(0)
    for t in range(steps):
        if resets[t]:
            h = h * keep_s[t]
        gh = linear_bias(h, weight_hh, bias_hh)  # (B, 3H)
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
    tanh_slope = torch.addcmul(_constant(act, 1.0), n, n, value=-1)  # 1 - n^2
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
    linear_add = linear_add_for(dy, batch * hidden * 3 * hidden)
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
        dx, dweight_ih, dbias_ih = _projection_grads(ctx.needs_input_grad[0], flat_x, x, weight_ih)
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
