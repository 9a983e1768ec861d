"""LSTM and GRU layers whose time loops run in the native kernels (``kernels.c``).

Same arguments and results as :mod:`recurrl.nn.reference` (the definition;
``tests/test_nn_native.py`` holds them equal). Python does what covers the whole sequence in one
product each (input projection; ``dx``, ``dW_ih``, ``dW_hh`` and bias gradients); one kernel call
runs every step's recurrent product and gate arithmetic, forward or backward. Only float32 on
CPU; :func:`supports` says whether a call can use them. Every kernel call goes through
:func:`recurrl.nn.native.build.call`, which checks each tensor before its pointer is passed.

:func:`lstm_step` / :func:`gru_step` make the same forward kernel call for one acting step with
only what one step needs (measured, acting with 8 envs and LSTM 128: 47 instead of 69 us per
core step, around a 13 us kernel call).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.fused.common import column_sums, projection_grads, shifted_state
from recurrl.nn.native import frozen
from recurrl.nn.native.build import call, library
from recurrl.nn.native.frozen import _cached


def supports(x: Tensor) -> bool:
    """Whether the kernels can run a layer on ``x`` (float32 on CPU, library built)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and library() is not None


def _recurrent_weight(weight: Tensor) -> tuple[int, Tensor, tuple[int, int]]:
    """``(transposed, W, shape)`` for a forward kernel: ``W_hh^T`` ``[H, G]`` cached inside
    :func:`~recurrl.nn.native.frozen.frozen_weights`, else ``W_hh`` ``[G, H]`` for the kernel to
    transpose into its scratch."""
    if not frozen.active():
        weight = weight.detach().contiguous()
        return 0, weight, tuple(weight.shape)
    weight_t = frozen.transposed(weight)
    return 1, weight_t, tuple(weight_t.shape)


def _flat_keep(keep: Tensor) -> Tensor:
    return keep.reshape(keep.shape[0], keep.shape[1]).contiguous()  # (T, B)


def _input_gates(x: Tensor, weight_ih: Tensor, bias: Tensor) -> Tensor:
    """``x[T*B, I] @ W_ih^T + bias`` -> ``[T*B, G]``, contiguous (the kernels overwrite it)."""
    return torch.addmm(bias.detach(), x, weight_ih.detach().t())


def _lstm_forward(x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
    """``(y, c_all, activations)`` of an LSTM layer (every step's ``h``, ``c`` and gates)."""
    steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
    bias = _cached("bias", torch.add, bias_ih, bias_hh)
    gates = _input_gates(x.reshape(steps * batch, -1), weight_ih, bias)  # (T*B, 4H)
    transposed, weight, weight_shape = _recurrent_weight(weight_hh)
    y = x.new_empty(steps, batch, hidden)
    c_all = torch.empty_like(y)
    scratch_size = batch * hidden + (0 if transposed else 4 * hidden * hidden)
    state = (batch, hidden)
    call(
        "recurrl_lstm_forward",
        (steps, batch, hidden, transposed),
        (
            ("gates", gates, (steps * batch, 4 * hidden)),
            ("h0", h0.detach().contiguous(), state),
            ("c0", c0.detach().contiguous(), state),
            ("keep", _flat_keep(keep), (steps, batch)),
            ("weight_hh", weight, weight_shape),
            ("y", y, (steps, batch, hidden)),
            ("c_all", c_all, (steps, batch, hidden)),
            ("scratch", x.new_empty(scratch_size), (scratch_size,)),
        ),
    )
    return y, c_all, gates


class NativeLSTMFunction(torch.autograd.Function):
    """One LSTM layer, ``(x, h0, c0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T, c_T)``."""

    @staticmethod
    def forward(ctx, x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        y, c_all, gates = _lstm_forward(x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh)
        ctx.save_for_backward(x, y, c_all, gates, h0, c0, keep, weight_ih, weight_hh)
        return y, y[-1].clone(), c_all[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last, dc_last):
        x, y, c_all, act, h0, c0, keep, weight_ih, weight_hh = ctx.saved_tensors
        steps, batch, hidden = y.shape
        dh, dc = dh_last.contiguous().clone(), dc_last.contiguous().clone()
        dgates = act.new_empty(steps * batch, 4 * hidden)
        sequence, state = (steps, batch, hidden), (batch, hidden)
        call(
            "recurrl_lstm_backward",
            (steps, batch, hidden),
            (
                ("act", act, (steps * batch, 4 * hidden)),
                ("c_all", c_all, sequence),
                ("c0", c0.contiguous(), state),
                ("keep", _flat_keep(keep), (steps, batch)),
                ("weight_hh", weight_hh.contiguous(), (4 * hidden, hidden)),
                ("dy", dy.contiguous(), sequence),
                ("dh", dh, state),
                ("dc", dc, state),
                ("dgates", dgates, (steps * batch, 4 * hidden)),
                ("scratch", y.new_empty(state), state),
            ),
        )
        dx, dweight_ih, dbias = projection_grads(ctx.needs_input_grad[0], dgates, x, weight_ih)
        h_prev = shifted_state(h0, y, keep).flatten(0, 1)  # (T*B, H)
        dweight_hh = dgates.t() @ h_prev  # (4H, H)
        return dx, dh, dc, None, dweight_ih, dweight_hh, dbias, dbias


def _gru_forward(x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
    """``(y, gates_hn, activations)`` of a GRU layer."""
    steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
    gates = _input_gates(x.reshape(steps * batch, -1), weight_ih, bias_ih)  # (T*B, 3H)
    transposed, weight, weight_shape = _recurrent_weight(weight_hh)
    y = x.new_empty(steps, batch, hidden)
    gates_hn = torch.empty_like(y)
    scratch_size = 4 * batch * hidden + (0 if transposed else 3 * hidden * hidden)
    call(
        "recurrl_gru_forward",
        (steps, batch, hidden, transposed),
        (
            ("gates", gates, (steps * batch, 3 * hidden)),
            ("h0", h0.detach().contiguous(), (batch, hidden)),
            ("keep", _flat_keep(keep), (steps, batch)),
            ("weight_hh", weight, weight_shape),
            ("bias_hh", bias_hh.detach().contiguous(), (3 * hidden,)),
            ("y", y, (steps, batch, hidden)),
            ("gates_hn", gates_hn, (steps, batch, hidden)),
            ("scratch", x.new_empty(scratch_size), (scratch_size,)),
        ),
    )
    return y, gates_hn, gates


class NativeGRUFunction(torch.autograd.Function):
    """One GRU layer, ``(x, h0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T)``."""

    @staticmethod
    def forward(ctx, x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        y, gates_hn, gates = _gru_forward(x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh)
        ctx.save_for_backward(x, y, gates, gates_hn, h0, keep, weight_ih, weight_hh)
        return y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):
        x, y, act, gates_hn, h0, keep, weight_ih, weight_hh = ctx.saved_tensors
        steps, batch, hidden = y.shape
        h_prev = shifted_state(h0, y, keep).contiguous()  # (T, B, H), masked
        dh = dh_last.contiguous().clone()
        dgates_x = act.new_empty(steps * batch, 3 * hidden)
        dgates_h = torch.empty_like(dgates_x)
        sequence, state = (steps, batch, hidden), (batch, hidden)
        call(
            "recurrl_gru_backward",
            (steps, batch, hidden),
            (
                ("act", act, (steps * batch, 3 * hidden)),
                ("gates_hn", gates_hn, sequence),
                ("keep", _flat_keep(keep), (steps, batch)),
                ("h_prev", h_prev, sequence),
                ("weight_hh", weight_hh.contiguous(), (3 * hidden, hidden)),
                ("dy", dy.contiguous(), sequence),
                ("dh", dh, state),
                ("dgates_x", dgates_x, (steps * batch, 3 * hidden)),
                ("dgates_h", dgates_h, (steps * batch, 3 * hidden)),
                ("scratch", y.new_empty(state), state),
            ),
        )
        dx, dweight_ih, dbias_ih = projection_grads(ctx.needs_input_grad[0], dgates_x, x, weight_ih)
        dweight_hh = dgates_h.t() @ h_prev.flatten(0, 1)  # (3H, H)
        return dx, dh, None, dweight_ih, dweight_hh, dbias_ih, column_sums(dgates_h)


def _needs_autograd(inputs: tuple[Tensor, ...]) -> bool:
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)


def native_lstm_layer(
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
    inputs = (x, h, c, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if _needs_autograd(inputs):
        return NativeLSTMFunction.apply(*inputs)
    with torch.no_grad():
        y, c_all, _ = _lstm_forward(*inputs)
        return y, y[-1], c_all[-1]


def native_gru_layer(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One GRU layer, same arguments and result as ``reference.gru_layer_reference``."""
    inputs = (x, h, keep, weight_ih, weight_hh, bias_ih, bias_hh)
    if _needs_autograd(inputs):
        return NativeGRUFunction.apply(*inputs)
    with torch.no_grad():
        y, _, _ = _gru_forward(*inputs)
        return y, y[-1]


def lstm_step(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """``(h', c')`` after one step of rows ``x[B, I]`` from ``h, c [B, H]``; ``keep[B]`` is 0
    where the state resets first. Float32 on CPU, contiguous, no gradient recorded."""
    batch, hidden = h.shape
    bias = _cached("bias", torch.add, bias_ih, bias_hh)
    gates = torch.addmm(bias, x, weight_ih.t())  # (B, 4H); the kernel overwrites it
    transposed, weight, weight_shape = _recurrent_weight(weight_hh)
    h_out, c_out = h.new_empty(batch, hidden), c.new_empty(batch, hidden)
    scratch = h.new_empty(batch * hidden + (0 if transposed else 4 * hidden * hidden))
    state = (batch, hidden)
    call(
        "recurrl_lstm_forward",
        (1, batch, hidden, transposed),
        (
            ("gates", gates, (batch, 4 * hidden)),
            ("h0", h, state),
            ("c0", c, state),
            ("keep", keep, (batch,)),
            ("weight_hh", weight, weight_shape),
            ("y", h_out, state),
            ("c_all", c_out, state),
            ("scratch", scratch, scratch.shape),
        ),
    )
    return h_out, c_out


def gru_step(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> Tensor:
    """``h'`` after one GRU step; arguments as :func:`lstm_step`."""
    batch, hidden = h.shape
    gates = torch.addmm(bias_ih, x, weight_ih.t())  # (B, 3H)
    transposed, weight, weight_shape = _recurrent_weight(weight_hh)
    h_out, gates_hn = h.new_empty(batch, hidden), h.new_empty(batch, hidden)
    scratch = h.new_empty(4 * batch * hidden + (0 if transposed else 3 * hidden * hidden))
    state = (batch, hidden)
    call(
        "recurrl_gru_forward",
        (1, batch, hidden, transposed),
        (
            ("gates", gates, (batch, 3 * hidden)),
            ("h0", h, state),
            ("keep", keep, (batch,)),
            ("weight_hh", weight, weight_shape),
            ("bias_hh", bias_hh, (3 * hidden,)),
            ("y", h_out, state),
            ("gates_hn", gates_hn, state),
            ("scratch", scratch, scratch.shape),
        ),
    )
    return h_out
