"""Sequence cores behind one interface.

``core(x[T, B, F], state, episode_start[T, B]) -> (y[T, B, H], state)`` where ``state`` is always
a tuple of 3-d tensors with the batch in dim 1: ``[num_layers, B, H]`` tensors ``(h, c)`` for
LSTM, ``(h,)`` for GRU, the Elman RNN and minGRU; the windowed cores keep the steps they look
back on, ``(memory_0[context, B, H], ..., length[1, B, 1])`` for the transformer and
``(buffer[R - 1, B, F],)`` for the TCN; ``()`` for the memoryless core. Acting uses
``core.step(x[B, F], state, episode_start[B]) -> (y[B, H], state)``, the same computation as the
call with ``T = 1`` (tested), through the native kernels' one-step path where they run.

Options: ``layer_norm`` swaps in the layer-normalised cells of :mod:`recurrl.policy.layernorm`
(LSTM and GRU only); ``learned_initial_state`` wraps a core in :class:`LearnedInitialState`
(not the transformer or TCN: their state is a window of past steps, not a start point);
``context`` is the transformer's and the TCN's memory span;
``forget_bias`` sets the LSTM's forget-gate bias (the other cores have no forget gate and ignore
it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from recurrl import nn as rnn
from recurrl.policy.encoders import ACTIVATIONS, layer_init
from recurrl.policy.layernorm import LayerNormGRU, LayerNormLSTM

State = tuple[Tensor, ...]


class LSTMCore(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_layers: int,
        layer_norm: bool = False,
        forget_bias: float | None = 1.0,
    ) -> None:
        super().__init__()
        lstm = LayerNormLSTM if layer_norm else rnn.LSTM
        self.rnn = lstm(in_features, hidden_size, num_layers)
        self.out_features = hidden_size
        if forget_bias is not None:
            self._init_forget_bias(forget_bias)

    @torch.no_grad()
    def _init_forget_bias(self, value: float) -> None:
        """Start the forget gate open (bias ``value``), so memory survives early training.

        Jozefowicz et al. 2015 (https://proceedings.mlr.press/v37/jozefowicz15.pdf); torch's
        uniform init starts the gate near 0.5, which forgets a bit within a few steps.
        """
        H = self.out_features
        for layer in range(self.rnn.num_layers):
            if isinstance(self.rnn, rnn.LSTM):
                getattr(self.rnn, f"bias_ih_l{layer}")[H : 2 * H] = value  # gates i, f, g, o
                getattr(self.rnn, f"bias_hh_l{layer}")[H : 2 * H] = 0.0
            else:
                self.rnn.input_norm[layer].bias[H : 2 * H] = value

    def initial_state(self, batch_size: int) -> State:
        return self.rnn.initial_state(batch_size)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, (h, c) = self.rnn(x, (state[0], state[1]), episode_start)
        return y, (h, c)

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, (h, c) = _step(self.rnn, x, (state[0], state[1]), episode_start)
        return y, (h, c)


class GRUCore(nn.Module):
    def __init__(
        self, in_features: int, hidden_size: int, num_layers: int, layer_norm: bool = False
    ) -> None:
        super().__init__()
        gru = LayerNormGRU if layer_norm else rnn.GRU
        self.rnn = gru(in_features, hidden_size, num_layers)
        self.out_features = hidden_size

    def initial_state(self, batch_size: int) -> State:
        return (self.rnn.initial_state(batch_size),)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, h = self.rnn(x, state[0], episode_start)
        return y, (h,)

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, h = _step(self.rnn, x, state[0], episode_start)
        return y, (h,)


class _HiddenStateCore(nn.Module):
    """A core over a cell whose state is one tensor ``h`` (``cell_class``); state ``(h,)``."""

    cell_class: type[nn.Module]

    def __init__(self, in_features: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.rnn = self.cell_class(in_features, hidden_size, num_layers)
        self.out_features = hidden_size

    def initial_state(self, batch_size: int) -> State:
        return (self.rnn.initial_state(batch_size),)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, h = self.rnn(x, state[0], episode_start)
        return y, (h,)

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, h = self.rnn.step(x, state[0], episode_start)
        return y, (h,)


class RNNCore(_HiddenStateCore):
    """Elman RNN, ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (:class:`recurrl.nn.RNN`,
    ``torch.nn.RNN``'s layout)."""

    cell_class = rnn.RNN


class MinGRUCore(_HiddenStateCore):
    """minGRU (Feng et al. 2024): gates from the input only, ``h_t = (1 - z_t) h_{t-1} + z_t
    h~_t``, the recurrence solved over a chunk by a scan or a loop (:class:`recurrl.nn.MinGRU`)."""

    cell_class = rnn.MinGRU


class _WindowCore(nn.Module):
    """A core over a module that keeps a window of past steps (``window_class``); its state is
    the module's own tuple."""

    window_class: type[nn.Module]

    def __init__(self, in_features: int, hidden_size: int, num_layers: int, context: int) -> None:
        super().__init__()
        self.net = self.window_class(in_features, hidden_size, num_layers, context)
        self.out_features = hidden_size

    def initial_state(self, batch_size: int) -> State:
        return self.net.initial_state(batch_size)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        return self.net(x, tuple(state), episode_start)

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        return self.net.step(x, tuple(state), episode_start)


class TransformerCore(_WindowCore):
    """Pre-norm causal transformer over the last ``context`` steps of the episode, the window
    cached per layer (:class:`recurrl.nn.CausalTransformer`)."""

    window_class = rnn.CausalTransformer


class TCNCore(_WindowCore):
    """Causal dilated convolutions reaching at least ``context`` steps back, the last
    ``receptive_field - 1`` inputs buffered (:class:`recurrl.nn.TCN`)."""

    window_class = rnn.TCN


WINDOW_CORES = {"transformer": TransformerCore, "tcn": TCNCore}
"""The cores whose state is a window of past steps (``policy.context`` sets its span)."""


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

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        return self.net(x), ()


class LearnedInitialState(nn.Module):
    """A core whose initial state is a trained parameter instead of zeros.

    Wherever ``episode_start[t, b] = 1`` the state of row ``b`` becomes the learned state before
    step ``t`` (mid-sequence too). The wrapped core only resets to zeros, so the sequence is run
    in segments that each begin at a step where some row starts an episode: there the learned
    state is put in, and the segment runs with no resets. Acting (``T = 1``) is one call;
    training costs one core call per distinct reset step in the chunk.

    Args:
        core: a core with the common interface and a non-empty state.
    """

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.out_features = core.out_features
        self.initial = nn.ParameterList(
            nn.Parameter(torch.zeros_like(s)) for s in core.initial_state(1)
        )  # each (num_layers, 1, H)

    def initial_state(self, batch_size: int) -> State:
        """The learned state, detached, for ``batch_size`` rows."""
        return tuple(p.detach().expand(-1, batch_size, -1).clone() for p in self.initial)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        starts = episode_start.bool()  # (T, B)
        reset_steps = starts.any(1).nonzero().flatten().tolist()
        bounds = sorted({0, *reset_steps, x.shape[0]})
        no_reset = torch.zeros_like(episode_start)
        outputs = []
        for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
            rows = starts[begin].view(1, -1, 1)  # (1, B, 1)
            pairs = zip(self.initial, state, strict=True)
            state = tuple(torch.where(rows, p.to(s.dtype), s) for p, s in pairs)
            y, state = self.core(x[begin:end], state, no_reset[begin:end])
            outputs.append(y)
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0], state

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        y, state = self(x.unsqueeze(0), state, episode_start.unsqueeze(0))
        return y[0], state


def _step(cell: nn.Module, x: Tensor, state: Any, episode_start: Tensor) -> tuple[Tensor, Any]:
    """One step of ``cell`` for rows ``x[B, F]``: its ``step`` where it has one (the native
    kernels' one-step path), else its forward over a sequence of one."""
    if isinstance(cell, rnn.LSTM | rnn.GRU):
        return cell.step(x, state, episode_start)
    y, state = cell(x.unsqueeze(0), state, episode_start.unsqueeze(0))
    return y[0], state


def make_core(
    kind: str,
    in_features: int,
    hidden_size: int,
    num_layers: int,
    activation: str,
    layer_norm: bool = False,
    learned_initial_state: bool = False,
    forget_bias: float | None = 1.0,
    context: int = 32,
) -> nn.Module:
    """The core for ``policy.core`` (``lstm``, ``gru``, ``rnn``, ``mingru``, ``transformer``,
    ``tcn`` or ``none``) and its options.

    ``layer_norm`` and ``learned_initial_state`` have no effect on the memoryless core;
    ``layer_norm`` is refused for every core but ``lstm`` and ``gru``, ``learned_initial_state``
    for ``transformer`` and ``tcn``; ``forget_bias`` is used by ``lstm`` only, ``context`` by
    ``transformer`` and ``tcn`` only.
    """
    if kind == "none":
        return FeedForwardCore(in_features, hidden_size, activation)
    if layer_norm and kind not in ("lstm", "gru"):
        raise ValueError(f"policy.layer_norm: only the lstm and gru cores have it, not {kind!r}")
    if kind in WINDOW_CORES:
        if learned_initial_state:
            raise ValueError(
                f"policy.learned_initial_state: the {kind} core's state is a window of past "
                f"steps, which has no learned start; use it without learned_initial_state"
            )
        return WINDOW_CORES[kind](in_features, hidden_size, num_layers, context)
    if kind == "lstm":
        core = LSTMCore(in_features, hidden_size, num_layers, layer_norm, forget_bias)
    elif kind == "gru":
        core = GRUCore(in_features, hidden_size, num_layers, layer_norm)
    elif kind == "rnn":
        core = RNNCore(in_features, hidden_size, num_layers)
    elif kind == "mingru":
        core = MinGRUCore(in_features, hidden_size, num_layers)
    else:
        raise ValueError(
            f"policy.core: unknown core {kind!r} (lstm, gru, rnn, mingru, transformer, tcn or none)"
        )
    return LearnedInitialState(core) if learned_initial_state else core
