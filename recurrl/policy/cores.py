"""Sequence cores behind one interface.

``core(x[T, B, F], state, episode_start[T, B]) -> (y[T, B, H], state)`` where ``state`` is always
a tuple of ``[num_layers, B, H]`` tensors: ``(h, c)`` for LSTM, ``(h,)`` for GRU, ``()`` for the
memoryless core. Acting is the same call with ``T = 1``.
"""

from __future__ import annotations

from torch import Tensor, nn

from recurrl import nn as rnn
from recurrl.policy.encoders import ACTIVATIONS, layer_init

State = tuple[Tensor, ...]


class LSTMCore(nn.Module):
    def __init__(self, in_features: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.rnn = rnn.LSTM(in_features, hidden_size, num_layers)
        self.out_features = hidden_size

    def initial_state(self, batch_size: int) -> State:
        return self.rnn.initial_state(batch_size)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, (h, c) = self.rnn(x, (state[0], state[1]), episode_start)
        return y, (h, c)


class GRUCore(nn.Module):
    def __init__(self, in_features: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.rnn = rnn.GRU(in_features, hidden_size, num_layers)
        self.out_features = hidden_size

    def initial_state(self, batch_size: int) -> State:
        return (self.rnn.initial_state(batch_size),)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, h = self.rnn(x, state[0], episode_start)
        return y, (h,)


class FeedForwardCore(nn.Module):
    """Memoryless baseline: one Linear + activation of the same width, no state."""

    def __init__(self, in_features: int, hidden_size: int, activation: str) -> None:
        super().__init__()
        self.net = nn.Sequential(
            layer_init(nn.Linear(in_features, hidden_size)), ACTIVATIONS[activation]()
        )
        self.out_features = hidden_size

    def initial_state(self, batch_size: int) -> State:
        return ()

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        return self.net(x), ()


def make_core(kind: str, in_features: int, hidden_size: int, num_layers: int, activation: str):
    if kind == "lstm":
        return LSTMCore(in_features, hidden_size, num_layers)
    if kind == "gru":
        return GRUCore(in_features, hidden_size, num_layers)
    if kind == "none":
        return FeedForwardCore(in_features, hidden_size, activation)
    raise ValueError(f"policy.core: unknown core {kind!r} (lstm, gru or none)")
