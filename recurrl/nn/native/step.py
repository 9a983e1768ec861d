"""One step of the native LSTM / GRU layers for acting: ``x[B, I]`` -> ``y[B, H]``, no autograd.

Acting calls each core once per env step with ``B`` rows, so the time goes to Python around the
kernel rather than to arithmetic: the layer functions of :mod:`recurrl.nn.native.layers` (the
definition, shared with training) spend ~20 us per call on argument handling, autograd checks and
work buffers around a ~9 us kernel call. These functions make the same kernel call with only what
one step needs; ``tests/test_nn.py`` holds ``LSTM.step`` / ``GRU.step`` (their callers) equal to
the layers bit for bit. Outside :func:`~recurrl.nn.native.layers.frozen_weights` they still work
(transposing ``W_hh`` per call).
"""

from __future__ import annotations

import torch
from torch import Tensor

from recurrl.nn.matmul import linear
from recurrl.nn.native.build import library
from recurrl.nn.native.layers import _cached, _recurrent_weight


def _ptr(tensor: Tensor) -> int:
    return tensor.data_ptr()


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
    where the state resets first. Float32 on CPU, inputs contiguous, no gradient."""
    batch, hidden = h.shape
    bias = _cached("bias", torch.add, bias_ih, bias_hh)
    gates = linear(x, weight_ih, bias)  # (B, 4H), contiguous; the kernel overwrites it
    transposed, weight = _recurrent_weight(weight_hh)
    h_out, c_out = h.new_empty(batch, hidden), c.new_empty(batch, hidden)
    scratch = h.new_empty(batch * hidden + (0 if transposed else 4 * hidden * hidden))
    library().recurrl_lstm_forward(
        1,
        batch,
        hidden,
        transposed,
        *map(_ptr, (gates, h, c, keep, weight, h_out, c_out, scratch)),
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
    gates = linear(x, weight_ih, bias_ih)  # (B, 3H)
    transposed, weight = _recurrent_weight(weight_hh)
    h_out, gates_hn = h.new_empty(batch, hidden), h.new_empty(batch, hidden)
    scratch = h.new_empty(4 * batch * hidden + (0 if transposed else 3 * hidden * hidden))
    library().recurrl_gru_forward(
        1,
        batch,
        hidden,
        transposed,
        *map(_ptr, (gates, h, keep, weight, bias_hh, h_out, gates_hn, scratch)),
    )
    return h_out
