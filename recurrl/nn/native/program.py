"""Straight-line programs of native kernel calls: a whole acting step in one call.

Acting runs every layer of a policy once per env step on a few rows, so Python around the
kernels costs more than the kernels (measured, AMD EPYC Zen 5, torch 2.13: ~28 us per LSTM layer
step around a 7 us kernel). A :class:`Program` records the layer steps once, with their sizes,
weights and work buffers, and runs them all in one ``recurrl_program`` call. Each op computes
exactly what the function it stands for computes (``recurrl_linear_forward``,
``recurrl_lstm_forward`` / ``recurrl_gru_forward`` with the input projection in front), so a
program's results equal the layer-by-layer path's bit for bit (``tests/test_policy.py``).

Arrays are given as tensors (held by the program: weights, work buffers) or as :class:`Slot`\\ s,
positions in the tensors passed to each call (inputs, outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from recurrl.nn.native.build import library

LINEAR, LSTM, GRU, KEEP = 1, 2, 3, 4
"""Op codes of ``recurrl_program``."""


class Slot(NamedTuple):
    """``offset`` float32 elements into the call's tensor ``name``."""

    name: str
    offset: int = 0


Array = Tensor | Slot


class Program:
    """Ops appended in order (:meth:`keep`, :meth:`linear`, :meth:`lstm`, :meth:`gru`), then
    called with the tensors their slots name (float32, contiguous, the recorded sizes)."""

    def __init__(self) -> None:
        self._ints: list[int] = []
        self._ptrs: list[int] = []
        self._slots: list[tuple[int, str, int]] = []  # (index in ptrs, name, byte offset)
        self._held: list[Tensor] = []
        self._ops = 0
        self._ints_array: np.ndarray | None = None
        self._ptrs_array: np.ndarray | None = None

    def _add(self, code: int, sizes: tuple[int, ...], arrays: tuple[Array, ...]) -> None:
        self._ints += [code, *sizes]
        for array in arrays:
            if isinstance(array, Slot):
                self._slots.append((len(self._ptrs), array.name, 4 * array.offset))
                self._ptrs.append(0)
            else:
                if array.dtype != torch.float32 or not array.is_contiguous() or not array.is_cpu:
                    raise ValueError("program arrays must be contiguous float32 CPU tensors")
                self._held.append(array)
                self._ptrs.append(array.data_ptr())
        self._ops += 1
        self._ints_array = self._ptrs_array = None

    def linear(
        self, rows: int, inputs: int, outputs: int, act: int, x: Array, weight_t: Tensor,
        bias: Tensor, y: Array,
    ) -> None:  # fmt: skip
        """``y[rows, outputs] = act(x @ weight_t + bias)`` (``recurrl_linear_forward``)."""
        self._add(LINEAR, (rows, inputs, outputs, act), (x, weight_t, bias, y))

    def lstm(
        self, batch: int, inputs: int, hidden: int, x: Array, weight_ih_t: Tensor, bias: Tensor,
        h: Array, c: Array, keep: Array, weight_hh_t: Tensor, h_out: Array, c_out: Array,
    ) -> None:  # fmt: skip
        """One LSTM layer step; ``bias = b_ih + b_hh``, ``W^T`` of both weights."""
        gates = torch.empty(batch, 4 * hidden)
        scratch = torch.empty(batch * hidden)
        arrays = (x, weight_ih_t, bias, h, c, keep, weight_hh_t, h_out, c_out, gates, scratch)
        self._add(LSTM, (batch, inputs, hidden), arrays)

    def gru(
        self, batch: int, inputs: int, hidden: int, x: Array, weight_ih_t: Tensor,
        bias_ih: Tensor, h: Array, keep: Array, weight_hh_t: Tensor, bias_hh: Tensor,
        h_out: Array,
    ) -> None:  # fmt: skip
        """One GRU layer step; ``W^T`` of both weights."""
        gates, gates_hn = torch.empty(batch, 3 * hidden), torch.empty(batch, hidden)
        scratch = torch.empty(4 * batch * hidden)
        arrays = (x, weight_ih_t, bias_ih, h, keep, weight_hh_t, bias_hh, h_out, gates, gates_hn)
        self._add(GRU, (batch, inputs, hidden), (*arrays, scratch))

    def keep(self, batch: int, episode_start: Array, keep: Array) -> None:
        """``keep[batch] = 1 - episode_start`` (the cores' reset mask, as ``1.0 - x`` in torch)."""
        self._add(KEEP, (batch,), (episode_start, keep))

    def __call__(self, tensors: dict[str, Tensor]) -> None:
        """Run the ops on ``tensors`` (by slot name; the caller holds them over the call)."""
        if self._ptrs_array is None:
            self._ints_array = np.asarray(self._ints, dtype=np.int32)
            self._ptrs_array = np.asarray(self._ptrs, dtype=np.int64)
            self._addresses = (self._ints_array.ctypes.data, self._ptrs_array.ctypes.data)
        ptrs = self._ptrs_array
        addresses = {name: tensor.data_ptr() for name, tensor in tensors.items()}
        for index, name, offset in self._slots:
            ptrs[index] = addresses[name] + offset
        library().recurrl_program(self._ops, *self._addresses)
