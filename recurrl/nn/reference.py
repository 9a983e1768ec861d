"""Readable reference implementations of the reset-aware LSTM and GRU recurrences.

These functions are the *definition* of what the cores compute. Faster paths (see
``recurrl.nn.fused``) are tested against them for outputs and gradients.

Conventions: time-major ``x[T, B, I]``; ``episode_start[T, B]`` (1 where ``x[t, b]`` is the first
observation of an episode: the state of row ``b`` is zeroed *before* step ``t``). Weights are laid
out as in ``torch.nn.LSTM`` / ``torch.nn.GRU`` (gate order i, f, g, o for LSTM; r, z, n for GRU).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lstm_layer_reference(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a sequence.

    Args:
        x: inputs ``[T, B, I]``.
        h, c: initial state ``[B, H]``.
        keep: ``[T, B, 1]``, 0 where the state is reset before step t, else 1.
        weight_ih ``[4H, I]``, weight_hh ``[4H, H]``, bias_ih ``[4H]``, bias_hh ``[4H]``.

    Returns:
        ``(y[T, B, H], h_T[B, H], c_T[B, H])``.
    """
    gates_x = torch.addmm(bias_ih + bias_hh, x.flatten(0, 1), weight_ih.t())  # (T*B, 4H)
    gates_x = gates_x.view(x.shape[0], x.shape[1], -1)  # (T, B, 4H)
    outputs = []
    for t in range(x.shape[0]):
        h = h * keep[t]
        c = c * keep[t]
        gates = gates_x[t] + h @ weight_hh.t()  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), h, c


def gru_layer_reference(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One GRU layer over a sequence (same conventions as :func:`lstm_layer_reference`).

    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.

    Returns:
        ``(y[T, B, H], h_T[B, H])``.
    """
    gates_x = torch.addmm(bias_ih, x.flatten(0, 1), weight_ih.t())  # (T*B, 3H)
    gates_x = gates_x.view(x.shape[0], x.shape[1], -1)  # (T, B, 3H)
    outputs = []
    for t in range(x.shape[0]):
        h = h * keep[t]
        gates_h = torch.addmm(bias_hh, h, weight_hh.t())  # (B, 3H)
        xr, xz, xn = gates_x[t].chunk(3, dim=-1)
        hr, hz, hn = gates_h.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs), h
