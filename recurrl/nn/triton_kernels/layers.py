"""LSTM and GRU layers as autograd Functions around the Triton kernels (imports triton).

Same arguments, results and gradients as :func:`recurrl.nn.fused.lstm_layer` /
:func:`~recurrl.nn.fused.gru_layer`. Per call: the input projection for all ``T`` steps as one
GEMM, one forward kernel launch (:mod:`.kernels`), and in the backward one kernel launch then
``dx``, ``dW_ih``, ``dW_hh`` and the biases as GEMMs / column sums over ``[T * B]`` rows.
"""

from __future__ import annotations

import contextlib

import torch
import triton
from torch import Tensor
from torch.autograd.function import once_differentiable

from recurrl.nn.fused.common import column_sums, projection_grads
from recurrl.nn.matmul import linear, weight_grad
from recurrl.nn.triton_kernels.kernels import compiled

BLOCK_B = 16
"""Batch rows per program (``tl.dot`` needs at least 16)."""
WIDE_BLOCK_B = 32
"""Rows per program once ``BLOCK_B`` rows would give more programs than the GPU has SMs: every
program reads all of ``W_hh`` each step, so fewer, wider programs read it fewer times."""
MAX_BLOCK = {torch.float32: 32, torch.float64: 16}
"""Widest column / reduction tile per dtype (the tile is ``next_power_of_2(H)`` up to it)."""
NUM_WARPS = 8
NUM_STAGES = 2
"""Tiles, warps and software-pipelining depth chosen from what ptxas reports for sm_90 (triton
3.9, compiled ahead of time without a GPU): with 8 warps and 32-wide float32 (16-wide float64)
tiles no kernel spills registers (64-wide tiles or 4 warps spilled up to 4 KiB of stack per
thread) and shared memory stays under 24 KiB."""


def block_rows(batch: int, device: torch.device) -> int:
    """Rows per program: :data:`BLOCK_B`, or :data:`WIDE_BLOCK_B` when the batch fills the SMs."""
    if device.type != "cuda":
        return BLOCK_B
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return WIDE_BLOCK_B if triton.cdiv(batch, BLOCK_B) > sms else BLOCK_B


def launch_config(hidden: int, batch: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Grid, block sizes, warps, stages and ``tl.dot`` precision for a layer of ``hidden`` units.

    float32 follows ``torch.backends.cudnn.allow_tf32`` (what ``torch.nn.LSTM`` follows on a
    GPU): tf32 products when it is set (torch's default), ieee otherwise; float64 is ieee.
    """
    block = min(max(16, triton.next_power_of_2(hidden)), MAX_BLOCK[dtype])
    rows = block_rows(batch, device)
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    return {
        "grid": (triton.cdiv(batch, rows),),
        "BLOCK_B": rows,
        "BLOCK_N": block,
        "BLOCK_K": block,
        "PRECISION": "tf32" if tf32 else "ieee",
        "num_warps": NUM_WARPS,
        "num_stages": NUM_STAGES,
    }


def _check(x: Tensor, weight_hh: Tensor) -> None:
    if x.dtype not in MAX_BLOCK:
        raise ValueError(f"impl='triton' runs float32 and float64, got {x.dtype}")
    if weight_hh.dtype != x.dtype:
        raise ValueError(f"impl='triton': weights are {weight_hh.dtype}, inputs {x.dtype}")


def _launch(name: str, tensors: tuple, steps: int, hidden: int, like: Tensor) -> None:
    """Kernel ``name`` over ``tensors`` (its pointer arguments, in order) for the layer input
    ``like`` (``x[T, B, I]``: batch, dtype, device).

    The device is made current for the launch: triton launches on the current CUDA device.
    """
    batch = like.shape[1]
    config = launch_config(hidden, batch, like.dtype, like.device)
    grid = config.pop("grid")
    cuda = like.device.type == "cuda"
    with torch.cuda.device(like.device) if cuda else contextlib.nullcontext():
        compiled(name)[grid](*tensors, steps, batch, hidden, **config)


def _first_state(first: Tensor, steps: int) -> Tensor:
    """``[T + 1, B, H]`` buffer with ``first`` at 0 (the kernels fill the rest)."""
    buffer = first.new_empty(steps + 1, *first.shape)
    buffer[0] = first
    return buffer


def lstm_forward(x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
    """``(hs, cs, act, keep2)``: states ``[T + 1, B, H]`` (``hs[1:]`` is ``y``), activations
    ``[T, B, 4H]`` and the contiguous ``[T, B]`` keep mask."""
    _check(x, weight_hh)
    steps, batch, _ = x.shape
    hidden = h0.shape[-1]
    gates_x = linear(x.reshape(steps * batch, -1), weight_ih, bias_ih + bias_hh)
    gates_x = gates_x.to(x.dtype).contiguous()  # (T*B, 4H); .to: in case autocast is on
    hs, cs = _first_state(h0, steps), _first_state(c0, steps)
    act = torch.empty_like(gates_x)  # (T*B, 4H)
    keep2 = keep.reshape(steps, batch).to(x.dtype).contiguous()
    tensors = (gates_x, weight_hh.contiguous(), keep2, hs, cs, act)
    _launch("lstm_forward", tensors, steps, hidden, x)
    return hs, cs, act.view(steps, batch, -1), keep2


class TritonLSTMFunction(torch.autograd.Function):
    """One LSTM layer, ``(x, h0, c0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T, c_T)``."""

    @staticmethod
    def forward(ctx, x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        hs, cs, act, keep2 = lstm_forward(x, h0, c0, keep, weight_ih, weight_hh, bias_ih, bias_hh)
        ctx.save_for_backward(x, hs, cs, act, keep2, weight_ih, weight_hh)
        return hs[1:], hs[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last, dc_last):
        x, hs, cs, act, keep2, weight_ih, weight_hh = ctx.saved_tensors
        steps, batch, hidden = dy.shape
        dy = dy.contiguous().clone()
        dy[-1] += dh_last
        dgates = torch.empty_like(act)  # (T, B, 4H)
        dcs = torch.empty_like(cs)
        dcs[-1] = dc_last
        tensors = (dy, weight_hh.contiguous(), keep2, cs, act, dgates, dcs)
        _launch("lstm_backward", tensors, steps, hidden, x)
        keep = keep2.unsqueeze(-1)  # (T, B, 1)
        dh0 = linear(dgates[0], weight_hh.t()) * keep[0]
        flat = dgates.view(steps * batch, -1)  # (T*B, 4H)
        dx, dweight_ih, dbias = projection_grads(ctx.needs_input_grad[0], flat, x, weight_ih)
        h_prev = (hs[:-1] * keep).view(steps * batch, hidden)
        dweight_hh = weight_grad(flat, h_prev)
        return dx, dh0, dcs[0], None, dweight_ih, dweight_hh, dbias, dbias


def gru_forward(x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
    """``(hs, act, hn, keep2)``: states ``[T + 1, B, H]`` (``hs[1:]`` is ``y``), activations
    ``[T, B, 3H]``, the recurrent ``n`` gate ``[T, B, H]`` and the ``[T, B]`` keep mask."""
    _check(x, weight_hh)
    steps, batch, _ = x.shape
    hidden = h0.shape[-1]
    gates_x = linear(x.reshape(steps * batch, -1), weight_ih, bias_ih)
    gates_x = gates_x.to(x.dtype).contiguous()  # (T*B, 3H); .to: in case autocast is on
    hs = _first_state(h0, steps)
    act = torch.empty_like(gates_x)  # (T*B, 3H)
    hn = x.new_empty(steps, batch, hidden)
    keep2 = keep.reshape(steps, batch).to(x.dtype).contiguous()
    tensors = (gates_x, weight_hh.contiguous(), bias_hh.contiguous(), keep2, hs, act, hn)
    _launch("gru_forward", tensors, steps, hidden, x)
    return hs, act.view(steps, batch, -1), hn, keep2


class TritonGRUFunction(torch.autograd.Function):
    """One GRU layer, ``(x, h0, keep, W_ih, W_hh, b_ih, b_hh) -> (y, h_T)``."""

    @staticmethod
    def forward(ctx, x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh):
        hs, act, hn, keep2 = gru_forward(x, h0, keep, weight_ih, weight_hh, bias_ih, bias_hh)
        ctx.save_for_backward(x, hs, act, hn, keep2, weight_ih, weight_hh)
        return hs[1:], hs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_last):
        x, hs, act, hn, keep2, weight_ih, weight_hh = ctx.saved_tensors
        steps, batch, hidden = dy.shape
        dy = dy.contiguous().clone()
        dy[-1] += dh_last
        dgates_h, dgates_x = torch.empty_like(act), torch.empty_like(act)  # (T, B, 3H)
        direct = torch.empty_like(hs)  # (T + 1, B, H)
        direct[-1] = 0
        tensors = (dy, weight_hh.contiguous(), keep2, hs, act, hn, dgates_h, dgates_x, direct)
        _launch("gru_backward", tensors, steps, hidden, x)
        keep = keep2.unsqueeze(-1)  # (T, B, 1)
        dh0 = direct[0] + linear(dgates_h[0], weight_hh.t()) * keep[0]
        flat_h = dgates_h.view(steps * batch, -1)  # (T*B, 3H)
        flat_x = dgates_x.view(steps * batch, -1)
        dx, dweight_ih, dbias_ih = projection_grads(ctx.needs_input_grad[0], flat_x, x, weight_ih)
        h_prev = (hs[:-1] * keep).view(steps * batch, hidden)
        dweight_hh = weight_grad(flat_h, h_prev)
        return dx, dh0, None, dweight_ih, dweight_hh, dbias_ih, column_sums(flat_h)
