"""Reset-aware multi-layer Elman RNN (``tanh``) with ``torch.nn.RNN``'s parameter layout.

``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, the state zeroed before a step whose
``episode_start`` is 1 (as :class:`recurrl.nn.LSTM`/``GRU``). Parameters ``weight_ih_l{k}``
``[H, I]``, ``weight_hh_l{k}`` ``[H, H]``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``[H]``, so
``RNN.load_state_dict(torch.nn.RNN(I, H, L, nonlinearity="tanh").state_dict())`` works.

Implementations: ``"reference"`` (:func:`rnn_layer_reference`, the readable definition, autograd
through the unrolled loop) and ``"fused"`` (:mod:`recurrl.nn.fused.rnn`, a whole-sequence
autograd Function with a hand-written backward, any device and dtype). There are no C or Triton
kernels for this cell: ``impl="auto"`` always resolves to ``"fused"``, and ``"native"`` /
``"triton"`` are refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recurrl.nn.cores import _RecurrentBase, run_hidden_layers
from recurrl.nn.fused.rnn import rnn_layer

RNN_IMPLEMENTATIONS = ("auto", "fused", "reference")


def rnn_layer_reference(
    x: Tensor,
    h: Tensor,
    keep: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor]:
    """One Elman layer over a sequence (conventions of :mod:`recurrl.nn.reference`).

    Args:
        x: inputs ``[T, B, I]``; h: initial state ``[B, H]``; keep: ``[T, B, 1]``, 0 where the
            state is reset before step t; weight_ih ``[H, I]``, weight_hh ``[H, H]``, biases
            ``[H]``.

    Returns:
        ``(y[T, B, H], h_T[B, H])``.
    """
    outputs = []
    for t in range(x.shape[0]):
        h = h * keep[t]
        h = torch.tanh(x[t] @ weight_ih.t() + bias_ih + h @ weight_hh.t() + bias_hh)
        outputs.append(h)
    return torch.stack(outputs), h


RNN_LAYERS = {"fused": rnn_layer, "reference": rnn_layer_reference}


class RNN(_RecurrentBase):
    """Reset-aware multi-layer Elman RNN (tanh) with ``torch.nn.RNN``'s parameter layout.

    Args:
        input_size, hidden_size, num_layers: as :class:`recurrl.nn.LSTM`.
        impl: ``"auto"`` (= ``"fused"``), ``"fused"`` or ``"reference"``.
    """

    gate_multiplier = 1

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, impl: str = "auto"
    ) -> None:
        if impl not in RNN_IMPLEMENTATIONS:
            raise ValueError(f"RNN: impl must be one of {RNN_IMPLEMENTATIONS}, got {impl!r}")
        super().__init__(input_size, hidden_size, num_layers, "auto")
        self.impl = impl

    def _implementation(self, x: Tensor) -> str:
        if self.impl not in RNN_IMPLEMENTATIONS:
            raise ValueError(f"RNN: impl must be one of {RNN_IMPLEMENTATIONS}, got {self.impl!r}")
        return "fused" if self.impl == "auto" else self.impl

    def initial_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
        """Zero state ``h`` ``[num_layers, B, H]``."""
        return self._zeros(batch_size, device, dtype)

    def forward(
        self, x: Tensor, state: Tensor | None = None, episode_start: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run ``x[T, B, I]`` from ``state``; returns ``(y[T, B, H], h)``."""
        return run_hidden_layers(self, x, state, episode_start, RNN_LAYERS)

    def step(self, x: Tensor, state: Tensor, episode_start: Tensor) -> tuple[Tensor, Tensor]:
        """One step for acting: ``x[B, I]``, ``episode_start[B]`` -> ``(y[B, H], h)``; the same
        computation as ``forward(x[None], state, episode_start[None])``."""
        y, state = self(x.unsqueeze(0), state, episode_start.unsqueeze(0))
        return y[0], state
