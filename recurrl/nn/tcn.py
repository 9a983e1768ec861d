"""Reset-aware temporal convolutional network: causal dilated convolutions over the episode.

Kernel size 2 with dilations ``2^(n-1), ..., 4, 2, 1``, the smallest ``n`` with
``2^n - 1 >= context``, the cycle repeated ``num_layers`` times (WaveNet, van den Oord et al.
2016; the TCN of Bai et al. 2018, https://arxiv.org/abs/1803.01271). The largest dilation comes
first (WaveNet's order reversed, the same receptive field) because each level is a *valid*
convolution, whose output is ``d`` positions shorter than its input: dropping the long ones
first leaves ``R - 1 + T`` positions to the first level but only ``T + 1`` to the last. Each
level is a residual block::

    h[t] = h[t] + gelu(W [h[t - d]; h[t]])

after a linear projection of the inputs to ``H``; the output is ``tanh(W_out h[t] + b_out)``.
The output at step ``t`` reads the inputs of steps ``t - R + 1 .. t``, ``R = receptive_field =
1 + sum(dilations)``.

The projection and ``W`` have no bias and ``gelu(0) = 0``, so a step whose inputs are all zero
stays exactly zero at every level. (No LayerNorm inside: without a bias it keeps zero at zero,
but its gradient there is ``1 / sqrt(eps)``, about 300 per level, and a policy's features are
exactly zero often enough, e.g. a zero observation through a zero-bias encoder: six levels
made gradients of 1e11.) A reset therefore only has to zero
the inputs: the state is the buffer of the last ``R - 1`` inputs ``[R - 1, B, I]``, with the
rows before the current episode's start zeroed, and a fresh episode starts from an all-zero
buffer. Over a chunk, the taps of a step that reach before its episode's start read zero at
every level (a mask per dilation, no loop over time): the same values a zero buffer gives, so a
chunk equals stepping one step at a time (``impl="reference"``, tested) and nothing crosses an
episode start. Acting (``T = 1``) recomputes what the last step needs from the buffer: ``R - 1``
position-levels in all (63 for ``context`` 32, one cycle), not a cache per level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

from recurrl.nn.attention import episode_first_index
from recurrl.nn.cores import _check_inputs

TCN_IMPLEMENTATIONS = ("auto", "chunk", "reference")


def tcn_dilations(context: int, num_layers: int) -> tuple[int, ...]:
    """``2^(n-1), ..., 2, 1`` with ``2^n - 1 >= context`` (at least one level), ``num_layers``
    times."""
    levels = max(1, math.ceil(math.log2(context + 1)))
    return tuple(2**level for level in reversed(range(levels))) * num_layers


class TCN(nn.Module):
    """Causal dilated convolutions; state ``(buffer[R - 1, B, I],)``.

    Args:
        input_size: ``I``; hidden_size: ``H``, the width of every level.
        num_layers: repeats of the dilation cycle.
        context: earlier steps one cycle must reach (>= 1), see :func:`tcn_dilations`.
        impl: ``"auto"`` (= ``"chunk"``, every step of the chunk at once) or ``"reference"``
            (one step at a time, as acting does).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        context: int = 32,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if context < 1:
            raise ValueError(f"TCN: context must be >= 1, got {context}")
        if impl not in TCN_IMPLEMENTATIONS:
            raise ValueError(f"TCN: impl must be one of {TCN_IMPLEMENTATIONS}, got {impl!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.impl = impl
        self.dilations = tcn_dilations(context, num_layers)
        self.receptive_field = 1 + sum(self.dilations)
        self.input_projection = nn.Linear(input_size, hidden_size, bias=False)
        self.convolutions = nn.ModuleList(  # taps [h[t - d]; h[t]] -> H
            nn.Linear(2 * hidden_size, hidden_size, bias=False) for _ in self.dilations
        )
        self.output = nn.Linear(hidden_size, hidden_size)  # each step's own: it may have a bias

    def initial_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor]:
        """The empty buffer: zeros ``[R - 1, B, I]``."""
        weight = self.input_projection.weight
        buffer = torch.zeros(
            self.receptive_field - 1,
            batch_size,
            self.input_size,
            device=device or weight.device,
            dtype=dtype or weight.dtype,
        )
        return (buffer,)

    def forward(
        self, x: Tensor, state: tuple[Tensor] | None = None, episode_start: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor]]:
        """Run ``x[T, B, I]`` from ``state``; returns ``(y[T, B, H], (buffer,))``."""
        _check_inputs(x, episode_start, self.input_size, "TCN")
        T, B = x.shape[:2]
        if state is None:
            state = self.initial_state(B, x.device, x.dtype)
        expected = (self.receptive_field - 1, B, self.input_size)
        if len(state) != 1 or tuple(state[0].shape) != expected:
            shapes = [list(part.shape) for part in state]
            raise ValueError(f"TCN: state must be one buffer {list(expected)}, got {shapes}")
        if episode_start is None:
            episode_start = torch.zeros(T, B, dtype=torch.bool, device=x.device)
        if self.impl not in TCN_IMPLEMENTATIONS:
            raise ValueError(f"TCN: impl must be one of {TCN_IMPLEMENTATIONS}, got {self.impl!r}")
        if self.impl != "reference":
            y, buffer = self._chunk(x, state[0], episode_start)
            return y, (buffer,)
        buffer, outputs = state[0], []
        for t in range(T):
            y, buffer = self._chunk(x[t : t + 1], buffer, episode_start[t : t + 1])
            outputs.append(y)
        return torch.cat(outputs), (buffer,)

    def step(
        self, x: Tensor, state: tuple[Tensor], episode_start: Tensor
    ) -> tuple[Tensor, tuple[Tensor]]:
        """One step for acting: ``x[B, I]``, ``episode_start[B]`` -> ``(y[B, H], state)``."""
        y, state = self(x.unsqueeze(0), state, episode_start.unsqueeze(0))
        return y[0], state

    def _chunk(self, x: Tensor, buffer: Tensor, episode_start: Tensor) -> tuple[Tensor, Tensor]:
        """Valid convolutions over ``[buffer ++ chunk]``, taps before a step's episode start
        masked; each level's output starts ``d`` positions later than its input."""
        T, B = x.shape[:2]
        past = self.receptive_field - 1
        sequence = torch.cat([buffer, x])  # (N, B, I), N = past + T
        carried = torch.full((B,), past, dtype=torch.long, device=x.device)  # zeros before a reset
        first = episode_first_index(episode_start, past, carried)  # (T, B)
        first = torch.cat([first.new_zeros(past, B), first])  # (N, B)
        positions = torch.arange(past + T, device=x.device).unsqueeze(1)  # (N, 1)
        h = self.input_projection(sequence)  # (n, B, H), positions N - n .. N - 1
        for dilation, convolution in zip(self.dilations, self.convolutions, strict=True):
            earlier, h = h[:-dilation], h[dilation:]  # (n - d, B, H) each
            first, positions = first[dilation:], positions[dilation:]
            same_episode = (positions - dilation >= first).unsqueeze(-1)  # (n - d, B, 1)
            earlier = torch.where(same_episode, earlier, 0.0)
            h = h + functional.gelu(convolution(torch.cat([earlier, h], dim=-1)))
        kept = torch.arange(T, T + past, device=x.device).unsqueeze(1) >= first[-1]  # (past, B)
        y = torch.tanh(self.output(h))  # (T, B, H)
        return y, torch.where(kept.unsqueeze(-1), sequence[T:], 0.0)
