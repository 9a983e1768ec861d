"""Layer-normalised LSTM and GRU cells (Ba et al. 2016, https://arxiv.org/abs/1607.06450).

Same interface and reset semantics as :mod:`recurrl.nn`'s cores —
``core(x[T, B, I], state, episode_start[T, B]) -> (y[T, B, H], state)``, state tensors
``[num_layers, B, H]``, the state of row ``b`` zeroed before step ``t`` where
``episode_start[t, b] = 1`` — with each gate's input and recurrent pre-activations normalised
separately (per gate, over ``H``), which keeps long unrolls well-conditioned. The input
projection and its normalisation run for the whole sequence at once; only the recurrent part
loops. The LSTM also normalises the cell state before its output tanh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GateNorm(nn.Module):
    """Layer norm of ``G`` gates of size ``H`` each: ``[..., G * H]`` normalised per gate."""

    def __init__(self, gates: int, hidden_size: int) -> None:
        super().__init__()
        self.gates, self.hidden_size = gates, hidden_size
        self.weight = nn.Parameter(torch.ones(gates * hidden_size))
        self.bias = nn.Parameter(torch.zeros(gates * hidden_size))

    def forward(self, x: Tensor) -> Tensor:
        split = x.unflatten(-1, (self.gates, self.hidden_size))  # (..., G, H)
        normalised = F.layer_norm(split, (self.hidden_size,)).flatten(-2)  # (..., G*H)
        return normalised * self.weight + self.bias


class _LayerNormRecurrent(nn.Module):
    """Shared set-up: per layer an input and a recurrent projection, each gate-normalised."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        width = self.gates * hidden_size
        self.input_proj = nn.ModuleList()
        self.hidden_proj = nn.ModuleList()
        self.input_norm = nn.ModuleList()
        self.hidden_norm = nn.ModuleList()
        for layer in range(num_layers):
            self.input_proj.append(nn.Linear(input_size if layer == 0 else hidden_size, width))
            self.hidden_proj.append(nn.Linear(hidden_size, width, bias=False))
            self.input_norm.append(GateNorm(self.gates, hidden_size))
            self.hidden_norm.append(GateNorm(self.gates, hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for projection in (*self.input_proj, *self.hidden_proj):
            nn.init.uniform_(projection.weight, -bound, bound)

    def _zeros(self, batch_size: int) -> Tensor:
        weight = self.hidden_proj[0].weight
        return weight.new_zeros(self.num_layers, batch_size, self.hidden_size)

    def _check(self, x: Tensor, episode_start: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [T, B, {self.input_size}], "
                f"got {list(x.shape)}"
            )
        if tuple(episode_start.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{type(self).__name__}: episode_start must be [T, B] = {list(x.shape[:2])}, "
                f"got {list(episode_start.shape)}"
            )
        return (1.0 - episode_start.to(x.dtype)).unsqueeze(-1)  # (T, B, 1) keep mask


class LayerNormLSTM(_LayerNormRecurrent):
    """Layer-normalised LSTM; state ``(h, c)``, each ``[num_layers, B, H]``.

    ``i, f, g, o = LN(W_i x) + LN(W_h h)`` (per gate), ``c' = s(f) c + s(i) tanh(g)``,
    ``h' = s(o) tanh(LN(c'))``.
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers)
        self.cell_norm = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        return self._zeros(batch_size), self._zeros(batch_size)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor], episode_start: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        keep = self._check(x, episode_start)
        hs, cs = [], []
        for layer in range(self.num_layers):
            h, c = state[0][layer], state[1][layer]
            gates_x = self.input_norm[layer](self.input_proj[layer](x))  # (T, B, 4H)
            outputs = []
            for t in range(x.shape[0]):
                h, c = h * keep[t], c * keep[t]
                gates = gates_x[t] + self.hidden_norm[layer](self.hidden_proj[layer](h))
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self.cell_norm[layer](c))
                outputs.append(h)
            x = torch.stack(outputs)  # (T, B, H), input of the next layer
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


class LayerNormGRU(_LayerNormRecurrent):
    """Layer-normalised GRU; state ``h`` ``[num_layers, B, H]``.

    ``r, z, n`` pre-activations ``LN(W_i x)`` and ``LN(W_h h)`` (per gate);
    ``n = tanh(x_n + r * h_n)``, ``h' = (1 - z) n + z h``.
    """

    gates = 3

    def initial_state(self, batch_size: int) -> Tensor:
        return self._zeros(batch_size)

    def forward(self, x: Tensor, state: Tensor, episode_start: Tensor) -> tuple[Tensor, Tensor]:
        keep = self._check(x, episode_start)
        hs = []
        for layer in range(self.num_layers):
            h = state[layer]
            gates_x = self.input_norm[layer](self.input_proj[layer](x))  # (T, B, 3H)
            outputs = []
            for t in range(x.shape[0]):
                h = h * keep[t]
                gates_h = self.hidden_norm[layer](self.hidden_proj[layer](h))  # (B, 3H)
                xr, xz, xn = gates_x[t].chunk(3, dim=-1)
                hr, hz, hn = gates_h.chunk(3, dim=-1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = (1.0 - z) * torch.tanh(xn + r * hn) + z * h
                outputs.append(h)
            x = torch.stack(outputs)  # (T, B, H)
            hs.append(h)
        return x, torch.stack(hs)
