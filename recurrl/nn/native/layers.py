"""LSTM and GRU layers whose time loops run in the native kernels (``kernels.c``).

Same arguments and results as :mod:`recurrl.nn.reference` (the definition;
``tests/test_nn_native.py`` holds them equal). Python does what covers the whole sequence in one
product each (input projection; ``dx``, ``dW_ih``, ``dW_hh`` and bias gradients, through
:mod:`recurrl.nn.matmul`); one kernel call runs every step's recurrent product and gate
arithmetic, forward or backward. Only float32 on CPU; :func:`supports` says whether a call can
use them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.fused.common import column_sums, projection_grads, shifted_state
from recurrl.nn.matmul import linear, weight_grad
from recurrl.nn.native import frozen
from recurrl.nn.native.build import library
from recurrl.nn.native.frozen import _cached, frozen_weights  # noqa: F401 (re-exported)
from recurrl.nn.native.ops import transpose


def supports(x: Tensor) -> bool:
    """Whether the kernels can run a layer on ``x`` (float32 on CPU, library built)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and library() is not None


def _pointers(*tensors: Tensor) -> list[int]:
    """Data pointers; the caller must hold every tensor until the kernel returns."""
    return [tensor.data_ptr() for tensor in tensors]


def _recurrent_weight(weight: Tensor) -> tuple[int, Tensor]:
    """``(transposed, W)`` for a forward kernel: ``W_hh^T`` cached inside
    :func:`frozen_weights`, else ``W_hh`` for the kernel to transpose."""
    if not frozen.active():
        return 0, weight.contiguous()
    return 1, frozen.transposed(weight)


def _flat_keep(keep: Tensor) -> Tensor:
    return keep.reshape(keep.shape[0], keep.shape[1]).contiguous()  # (T, B)


class NativeLSTMFunction(torch.autograd.Function):
    """One LSTM layer, ``(x, h0, c0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T, c_T)``."""

    @staticmethod
    def forward(ctx, x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
        bias = _cached("bias", torch.add, bias_ih, bias_hh)
        gates = linear(x.flatten(0, 1), weight_ih, bias).contiguous()  # (T*B, 4H)
        h0, c0, keep_2d = h0.contiguous(), c0.contiguous(), _flat_keep(keep)
        y = x.new_empty(steps, batch, hidden)
        c_all = torch.empty_like(y)
        scratch = x.new_empty(batch * hidden + 4 * hidden * hidden)
        transposed, weight = _recurrent_weight(weight_hh)
        library().recurrl_lstm_forward(
            steps,
            batch,
            hidden,
            transposed,
            *_pointers(gates, h0, c0, keep_2d, weight, y, c_all, scratch),
        )
        if ctx is None:  # called by native_lstm_layer without autograd: views will do
            return y, y[-1], c_all[-1]
        ctx.save_for_backward(x, y, c_all, gates, h0, c0, keep, weight_ih, weight_hh)
        return y, y[-1].clone(), c_all[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last, dc_last):
        x, y, c_all, act, h0, c0, keep, weight_ih, weight_hh = ctx.saved_tensors
        steps, batch, hidden = y.shape
        dh, dc = dh_last.contiguous().clone(), dc_last.contiguous().clone()
        dgates = act.new_empty(steps * batch, 4 * hidden)
        scratch = y.new_empty(batch, hidden)
        keep_2d, weight_hh, dy = _flat_keep(keep), weight_hh.contiguous(), dy.contiguous()
        library().recurrl_lstm_backward(
            steps,
            batch,
            hidden,
            *_pointers(act, c_all, c0, keep_2d, weight_hh, dy, dh, dc, dgates, scratch),
        )
        dx, dweight_ih, dbias = projection_grads(ctx.needs_input_grad[0], dgates, x, weight_ih)
        h_prev = shifted_state(h0, y, keep).flatten(0, 1)  # (T*B, H)
        dweight_hh = weight_grad(dgates, h_prev, transpose)  # (4H, H)
        return dx, dh, dc, None, dweight_ih, dweight_hh, dbias, dbias


class NativeGRUFunction(torch.autograd.Function):
    """One GRU layer, ``(x, h0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T)``."""

    @staticmethod
    def forward(ctx, x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
        gates = linear(x.flatten(0, 1), weight_ih, bias_ih).contiguous()  # (T*B, 3H)
        h0, keep_2d, bias_hh = h0.contiguous(), _flat_keep(keep), bias_hh.contiguous()
        transposed, weight = _recurrent_weight(weight_hh)
        y = x.new_empty(steps, batch, hidden)
        gates_hn = torch.empty_like(y)
        scratch = x.new_empty(4 * batch * hidden + 3 * hidden * hidden)
        library().recurrl_gru_forward(
            steps,
            batch,
            hidden,
            transposed,
            *_pointers(gates, h0, keep_2d, weight, bias_hh, y, gates_hn, scratch),
        )
        if ctx is None:  # called by native_gru_layer without autograd: a view will do
            return y, y[-1]
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
        scratch = y.new_empty(batch, hidden)
        keep_2d, weight_hh, dy = _flat_keep(keep), weight_hh.contiguous(), dy.contiguous()
        library().recurrl_gru_backward(
            steps,
            batch,
            hidden,
            *_pointers(act, gates_hn, keep_2d, h_prev, weight_hh, dy),
            *_pointers(dh, dgates_x, dgates_h, scratch),
        )
        dx, dweight_ih, dbias_ih = projection_grads(ctx.needs_input_grad[0], dgates_x, x, weight_ih)
        dweight_hh = weight_grad(dgates_h, h_prev.flatten(0, 1), transpose)  # (3H, H)
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
        return NativeLSTMFunction.forward(None, *inputs)


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
        return NativeGRUFunction.forward(None, *inputs)
