"""Reset-aware causal transformer over a sliding window of the current episode.

A step attends to itself and to at most ``context`` earlier steps *of its own episode*, at every
layer. Each layer is a plain pre-norm block (Xiong et al. 2020, the "identity map reordering"
that GTrXL found essential for RL, Parisotto et al. 2020, https://arxiv.org/abs/1910.06764;
GTrXL's gating layers are not used)::

    h = h + Attention(LN(h), memory ++ h)        h = h + MLP(LN(h))

and the output is ``LN(h)`` of the last layer. Positions enter as a learned bias per head and
distance ``0 .. context`` added to the attention scores (a relative bias as in Shaw et al. 2018
and T5, without buckets), so a cached step needs no re-encoding as the window slides.

State, a tuple whose tensors all have the batch in dim 1:

* ``memory_l[context, B, H]`` for each layer ``l``: the layer's inputs at the last ``context``
  steps, oldest first (what Transformer-XL calls the memory). Layer 0's inputs are the core's
  inputs after a linear projection to ``H``. Slots before the episode start, or never filled,
  are zero and masked out;
* ``length[1, B, 1]`` (float): how many trailing slots hold steps of the current episode,
  ``0 .. context``.

A step with ``episode_start = 1`` sees none of the memory; a chunk ``[T, B]`` is one masked
attention per layer over ``[memory ++ chunk]`` (no loop over time), equal to stepping one step at
a time (``impl="reference"``, tested). Outputs over a chunk are a sliding-window (Mistral-style)
attention: the receptive field grows by ``context`` per layer, never across an episode start.

Acting reuses keys and values: on CPU inside ``policy.acting()`` (a
:func:`~recurrl.nn.native.frozen_weights` block, no autograd) :meth:`CausalTransformer.step` keeps
the normalised keys and values of the memory rows it returns (:class:`StepCache`), so the next
step from that state projects only its own row instead of all ``context + 1`` (measured on one
thread: a step 2.7x faster at context 128 with 32 envs, 3.5x at 1024 with 8). The state and
training are unchanged; every other call computes everything.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from recurrl.nn.cores import _check_inputs
from recurrl.nn.native import frozen
from recurrl.nn.native.frozen import _cached

TRANSFORMER_IMPLEMENTATIONS = ("auto", "chunk", "reference")

State = tuple[Tensor, ...]


def episode_first_index(episode_start: Tensor, history: int, carried: Tensor) -> Tensor:
    """For each step of a chunk, the position in ``[history ++ chunk]`` where its episode begins.

    Positions ``0 .. history - 1`` are the carried steps (oldest first), ``history + t`` is step
    ``t`` of the chunk.

    Args:
        episode_start: ``[T, B]``, 1 where step ``t`` begins an episode.
        history: number of carried positions before the chunk.
        carried: ``[B]`` long, how many of the trailing carried positions belong to the episode
            running at the chunk start (``0 .. history``).

    Returns:
        ``first[T, B]`` long: step ``t`` may see positions ``>= first[t]`` (and ``<= history + t``).
    """
    steps = torch.arange(history, history + episode_start.shape[0], device=episode_start.device)
    no_reset = (history - carried).unsqueeze(0)  # (1, B)
    starts = torch.where(episode_start.bool(), steps.unsqueeze(1), no_reset)  # (T, B)
    return starts.cummax(0).values


def default_num_heads(hidden_size: int) -> int:
    """4 heads where ``hidden_size`` divides by 4, else 2, else 1."""
    return next(heads for heads in (4, 2, 1) if hidden_size % heads == 0)


class TransformerBlock(nn.Module):
    """One pre-norm block: multi-head attention over ``memory ++ chunk``, then an MLP (4x wide).

    Args:
        hidden_size: ``H``; num_heads: divides ``H``; context: the largest distance attended to.
    """

    def __init__(self, hidden_size: int, num_heads: int, context: int) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"TransformerBlock: {num_heads} heads do not divide {hidden_size}")
        self.num_heads = num_heads
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size)
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.position_bias = nn.Parameter(torch.zeros(num_heads, context + 1))  # per distance
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size),
            nn.GELU(),
            nn.Linear(4 * hidden_size, hidden_size),
        )

    def forward(
        self,
        h: Tensor,
        sequence: Tensor,
        distance: Tensor,
        blocked: Tensor,
        memory_keys_values: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``h[T, B, H]`` (this layer's inputs at the chunk's steps) -> the next layer's inputs.

        Args:
            sequence: ``memory ++ h``, ``[S, B, H]`` with ``S = context + T``.
            distance: ``[T, S]`` long, query step minus key position, clamped to ``0 .. context``.
            blocked: ``[B, 1, T, S]`` bool, True where a step may not see a position.
            memory_keys_values: the memory's keys and values ``[2, B, nh, context, hs]`` when
                already known (acting's cache): then only the chunk's rows are projected.

        Returns:
            ``(h[T, B, H], keys_values[2, B, nh, S, hs])``, the keys and values of ``sequence``.
        """
        T, B, H = h.shape
        heads, head_size = self.num_heads, H // self.num_heads
        if memory_keys_values is None:
            normed = self.attention_norm(sequence)  # (S, B, H)
            keys_values = self.split_heads(self.key_value(normed))  # (2, B, nh, S, hs)
        else:
            normed = self.attention_norm(h)  # (T, B, H)
            new = self.split_heads(self.key_value(normed))  # (2, B, nh, T, hs)
            keys_values = torch.cat([memory_keys_values, new], dim=3)  # (2, B, nh, S, hs)
        q = (
            self.query(normed[-T:]).view(T, B, heads, head_size).permute(1, 2, 0, 3)
        )  # (B, nh, T, hs)
        k, v = keys_values  # each (B, nh, S, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_size)  # (B, nh, T, S)
        scores = scores + self.position_bias[:, distance]  # (nh, T, S) broadcast over B
        weights = scores.masked_fill(blocked, float("-inf")).softmax(-1)
        attended = (weights @ v).permute(2, 0, 1, 3).reshape(T, B, H)  # (T, B, H)
        h = h + self.attention_out(attended)
        return h + self.mlp(self.mlp_norm(h)), keys_values

    def split_heads(self, keys_values: Tensor) -> Tensor:
        """``[L, B, 2H]`` -> keys and values per head, ``[2, B, nh, L, hs]`` (a view)."""
        L, B, H2 = keys_values.shape
        heads = self.num_heads
        return keys_values.view(L, B, 2, heads, H2 // (2 * heads)).permute(2, 1, 3, 0, 4)


class _CacheEntry(NamedTuple):
    state: State  # the state a step returned
    snapshots: State  # copies of it (inference tensors keep no version counter)
    weights: tuple[Tensor, ...]  # the parameters the keys and values depend on
    versions: tuple[tuple[int, int], ...]  # their (_version, data_ptr) then
    keys_values: tuple[Tensor, ...]  # per layer [2, B, nh, context, hs], of its memory rows


class StepCache:
    """Keys and values of the memory rows in the states one transformer's acting steps returned.

    Lives in one :func:`~recurrl.nn.native.frozen_weights` block (gone when it closes, so an
    optimizer step between rollouts, fused ones included, never meets a stale entry). An entry
    is reused only for the very state tensors it was made for, unchanged in value, while the
    parameters behind it keep their identity, version and storage. Two entries: the rollout's
    own state survives one call from a side state (a truncated row's bootstrap value).
    """

    def __init__(self, _weight: Tensor | None = None) -> None:  # as ``_cached`` makes it
        self.entries: list[_CacheEntry] = []

    def find(self, state: State, weights: tuple[Tensor, ...]) -> list[Tensor] | None:
        """The per-layer keys and values for ``state``'s memories, or None if no entry holds."""
        for entry in self.entries:
            if (
                all(a is b for a, b in zip(entry.state, state, strict=True))
                and all(a is b for a, b in zip(entry.weights, weights, strict=True))
                and entry.versions == _versions(weights)
                and all(map(torch.equal, entry.snapshots, state))
            ):
                return list(entry.keys_values)
        return None

    def add(self, state: State, weights: tuple[Tensor, ...], keys_values: list[Tensor]) -> None:
        """Remember ``keys_values`` as those of ``state`` under ``weights`` (newest first)."""
        snapshots = tuple(part.clone() for part in state)
        entry = _CacheEntry(state, snapshots, weights, _versions(weights), tuple(keys_values))
        self.entries = [entry, *self.entries[:1]]


def _versions(weights: tuple[Tensor, ...]) -> tuple[tuple[int, int], ...]:
    """``(_version, data_ptr)`` of each parameter: an in-place change or new storage moves it."""
    return tuple((weight._version, weight.data_ptr()) for weight in weights)


class CausalTransformer(nn.Module):
    """Causal transformer whose state is the window of the last ``context`` steps per layer.

    Args:
        input_size: ``I``, features of each step's input.
        hidden_size: ``H``, the width of every block.
        num_layers: blocks.
        context: earlier steps of the episode a step attends to (>= 1).
        num_heads: attention heads (default :func:`default_num_heads`).
        impl: ``"auto"`` (= ``"chunk"``, one masked attention per layer over the chunk) or
            ``"reference"`` (one step at a time, as acting does).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        context: int = 32,
        num_heads: int | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if context < 1:
            raise ValueError(f"CausalTransformer: context must be >= 1, got {context}")
        if impl not in TRANSFORMER_IMPLEMENTATIONS:
            raise ValueError(
                f"CausalTransformer: impl must be one of {TRANSFORMER_IMPLEMENTATIONS}, "
                f"got {impl!r}"
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.context, self.impl = context, impl
        self.num_heads = num_heads or default_num_heads(hidden_size)
        self.input_projection = nn.Linear(input_size, hidden_size)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, self.num_heads, context) for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(hidden_size)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """Empty memories ``[context, B, H]`` per layer and ``length[1, B, 1] = 0``."""
        weight = self.input_projection.weight
        options = {"device": device or weight.device, "dtype": dtype or weight.dtype}
        memories = [
            torch.zeros(self.context, batch_size, self.hidden_size, **options)
            for _ in range(self.num_layers)
        ]
        return (*memories, torch.zeros(1, batch_size, 1, **options))

    def _check_state(self, state: State, batch_size: int) -> None:
        expected = [(self.context, batch_size, self.hidden_size)] * self.num_layers
        expected.append((1, batch_size, 1))
        shapes = [tuple(part.shape) for part in state]
        if shapes != expected:
            raise ValueError(f"CausalTransformer: state must have shapes {expected}, got {shapes}")

    def forward(
        self, x: Tensor, state: State | None = None, episode_start: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Run ``x[T, B, I]`` from ``state``; returns ``(y[T, B, H], state)``."""
        _check_inputs(x, episode_start, self.input_size, "CausalTransformer")
        T, B = x.shape[:2]
        if state is None:
            state = self.initial_state(B, x.device, x.dtype)
        self._check_state(state, B)
        if episode_start is None:
            episode_start = torch.zeros(T, B, dtype=torch.bool, device=x.device)
        if self.impl not in TRANSFORMER_IMPLEMENTATIONS:
            raise ValueError(
                f"CausalTransformer: impl must be one of {TRANSFORMER_IMPLEMENTATIONS}, "
                f"got {self.impl!r}"
            )
        if self.impl != "reference":
            return self._chunk(x, state, episode_start)[:2]
        outputs = []
        for t in range(T):
            y, state, *_ = self._chunk(x[t : t + 1], state, episode_start[t : t + 1])
            outputs.append(y)
        return torch.cat(outputs), state

    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        """One step for acting: ``x[B, I]``, ``episode_start[B]`` -> ``(y[B, H], state)``.

        Inside a :func:`~recurrl.nn.native.frozen_weights` block without autograd (acting), the
        keys and values of ``state``'s memory rows come from the :class:`StepCache` when
        ``state`` is what an earlier step returned; the step then keeps its own for the next.
        """
        x, episode_start = x.unsqueeze(0), episode_start.unsqueeze(0)  # (1, B, I), (1, B)
        cache = self._step_cache()
        if cache is None:
            y, state = self(x, state, episode_start)
            return y[0], state
        _check_inputs(x, episode_start, self.input_size, "CausalTransformer")
        self._check_state(state, x.shape[1])
        weights = self._key_value_weights()
        cached = cache.find(state, weights)
        y, state, keys_values, filled = self._chunk(x, state, episode_start, cached)
        kept = self._returned_keys_values(keys_values, filled, episode_start[0], cached is not None)
        cache.add(state, weights, kept)
        return y[0], state

    def _returned_keys_values(
        self, keys_values: list[Tensor], filled: Tensor, episode_start: Tensor, hit: bool
    ) -> list[Tensor]:
        """Each layer's keys and values ``[2, B, nh, C, hs]`` of the memory a step returns:
        those of ``memory ++ h`` shifted by one slot, and an empty (zero) row's in each slot
        that the new memory zeroes.

        After a cache hit the state came from a step, so its zeroed slots already hold an empty
        row's keys and values and stay zeroed one slot on; only a row that resets empties now
        (all but its new slot), so only those rows are written instead of a masked copy of all.
        """
        C, B = filled.shape[:2]
        zero = filled.new_zeros(1, 1, self.hidden_size, dtype=keys_values[0].dtype)
        kept = []
        for block, kv in zip(self.blocks, keys_values, strict=True):
            empty = block.split_heads(block.key_value(block.attention_norm(zero)))  # (2,1,nh,1,hs)
            shifted = kv[:, :, :, 1:]  # (2, B, nh, C, hs)
            if hit:
                resets = episode_start.nonzero().flatten()
                shifted[:, resets, :, :-1] = empty  # in this step's own concatenation
                kept.append(shifted)
            else:
                visible = filled.view(C, B).t().view(1, B, 1, C, 1)
                kept.append(torch.where(visible, shifted, empty))
        return kept

    def _step_cache(self) -> StepCache | None:
        """This module's :class:`StepCache` for the open frozen-weights block; None outside one,
        while autograd records, for ``impl="reference"`` (the definition stays uncached), and off
        the CPU (there recomputing is a few bandwidth-bound kernels, about what the cache's own
        copies cost, and its checks would add host syncs to every step)."""
        weight = self.input_projection.weight
        if not frozen.active() or torch.is_grad_enabled() or self.impl == "reference":
            return None
        if weight.device.type != "cpu":
            return None
        if weight.is_inference():  # made in inference mode: no version counters to check
            return None
        return _cached("transformer step cache", StepCache, weight)

    def _key_value_weights(self) -> tuple[Tensor, ...]:
        """The parameters the keys and values of a memory row depend on, layer by layer."""
        return tuple(
            weight
            for block in self.blocks
            for weight in (
                block.attention_norm.weight,
                block.attention_norm.bias,
                block.key_value.weight,
                block.key_value.bias,
            )
        )

    def _chunk(
        self,
        x: Tensor,
        state: State,
        episode_start: Tensor,
        memory_keys_values: list[Tensor] | None = None,
    ) -> tuple[Tensor, State, list[Tensor], Tensor]:
        """The masked attention over ``[memory ++ chunk]``, all steps of the chunk at once.

        ``memory_keys_values``: each layer's keys and values of its memory rows, if known.
        Returns ``(y, state, keys_values, filled)``: each layer's keys and values
        ``[2, B, nh, S, hs]`` of ``memory ++ chunk``, and ``filled[C, B, 1]``, the new memory's
        slots kept (the others are zeroed).
        """
        T, B = x.shape[:2]
        C = self.context
        *memories, length = state
        first = episode_first_index(episode_start, C, length.view(B).long())  # (T, B)
        keys = torch.arange(C + T, device=x.device)  # (S,)
        distance = (C + torch.arange(T, device=x.device)).unsqueeze(1) - keys  # (T, S)
        in_window = (distance >= 0) & (distance <= C)  # (T, S)
        in_episode = keys >= first.t().unsqueeze(-1)  # (B, T, S)
        blocked = ~(in_window & in_episode).unsqueeze(1)  # (B, 1, T, S)
        distance = distance.clamp(0, C)
        if memory_keys_values is None:
            memory_keys_values = [None] * self.num_layers
        h = self.input_projection(x)  # (T, B, H)
        new_memories, keys_values = [], []
        layers = zip(self.blocks, memories, memory_keys_values, strict=True)
        for block, memory, memory_kv in layers:
            sequence = torch.cat([memory, h])  # (S, B, H)
            new_memories.append(sequence[T:])  # (C, B, H): the last C inputs of this layer
            h, sequence_kv = block(h, sequence, distance, blocked, memory_kv)
            keys_values.append(sequence_kv)
        new_length = (C + T - first[-1]).clamp(max=C)  # (B,)
        slots = torch.arange(C, device=x.device).unsqueeze(1)  # (C, 1)
        filled = (slots >= C - new_length).unsqueeze(-1)  # (C, B, 1)
        new_memories = [torch.where(filled, memory, 0.0) for memory in new_memories]
        new_length = new_length.to(x.dtype).view(1, B, 1)
        return self.output_norm(h), (*new_memories, new_length), keys_values, filled
