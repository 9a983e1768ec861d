"""Cue recall: hold several random bits through distractor noise, answer a query for one."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import (
    BLANK,
    EPISODE_STREAM,
    MARKER,
    TARGET_FRAME,
    Task,
    TaskEnv,
    TaskVectorEnv,
    below,
    draw,
    frame_cell,
    grid_picture,
    paint_disc,
)

# Bit b of byte value v, as floats: _BYTE_BITS[v, b] = (v >> b) & 1.
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float32)  # (256, 8)
ON, OFF = (250, 200, 40), (70, 70, 70)  # picture colours of a cue bit 1 and 0


class CueRecall(Task):
    """Batched cue recall (see :class:`CueRecallEnv`)."""

    state_arrays = ("cue", "answer", "query_phase")
    memory_classes = 2

    def __init__(self, num_envs: int, num_bits: int = 4, delay: int = 10) -> None:
        super().__init__(num_envs)
        if not 1 <= num_bits <= 64 or delay < 0:
            raise ValueError(
                f"CueRecall: need 1 <= num_bits <= 64 and delay >= 0, got {num_bits=}, {delay=}"
            )
        self.num_bits, self.delay = num_bits, delay
        self.horizon = delay + 2
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2 * num_bits + 2,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._num_bytes = (num_bits + 7) // 8
        # The right part of an observation, [query one-hot (num_bits), cue flag, query flag], by
        # phase: 0 cue, 1 noise, 2 + q query for bit q, 2 + num_bits after the answer.
        self._flags = np.zeros((num_bits + 3, num_bits + 2), dtype=np.float32)
        self._flags[0, num_bits] = 1.0
        self._flags[2 + np.arange(num_bits), np.arange(num_bits)] = 1.0
        self._flags[2 : 2 + num_bits, num_bits + 1] = 1.0
        # Up to 8 bits, every observation is a row of one table, indexed 256 * phase + bits: one
        # gather per step instead of assembling the two parts.
        self._table = None
        if num_bits <= 8:
            byte_bits = np.tile(_BYTE_BITS[:, :num_bits], (num_bits + 3, 1))  # (256 * phases, k)
            flags = np.repeat(self._flags, 256, axis=0)  # (256 * phases, k + 2)
            self._table = np.concatenate([byte_bits, flags], axis=1)
        self.cue = np.zeros(num_envs, dtype=np.uint64)  # bit b of cue[i] is bit b of copy i
        self.answer = np.zeros(num_envs, dtype=np.int64)  # the queried bit's value
        self.query_phase = np.zeros(num_envs, dtype=np.int64)  # 2 + queried bit

    def new_episodes(self, rows: np.ndarray) -> None:
        keys = self.episode_keys[rows]
        cue = draw(keys, EPISODE_STREAM)
        query = below(draw(keys, EPISODE_STREAM + 1), self.num_bits)
        self.cue[rows] = cue
        self.answer[rows] = (cue >> query.astype(np.uint64)) & np.uint64(1)
        self.query_phase[rows] = 2 + query

    def observe(self, rows: np.ndarray) -> np.ndarray:
        phase = np.zeros(len(rows), dtype=np.int64)  # the first observation shows the cue
        return self._observation(self.cue[rows], phase)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        answered = self.elapsed == self.delay + 1  # this step's action answers the query
        reward = answered * np.where(actions == self.answer, 1.0, -1.0)
        self.elapsed += 1
        noisy = self.elapsed <= self.delay
        phase = np.where(noisy, 1, np.where(answered, 2 + self.num_bits, self.query_phase))
        bits = np.where(noisy, draw(self.episode_keys, self.elapsed), np.uint64(0))
        return self._observation(bits, phase), reward, answered, np.zeros_like(answered)

    def memory(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first cue bit (standing for all: each must be held until the query names one),
        shown at t = 0 only: its age is the elapsed steps."""
        target = (self.cue[rows] & np.uint64(1)).astype(np.int64)
        return target, self.elapsed[rows]

    def render(self, row: int, cell: int = 16) -> np.ndarray:
        """Top row: the cue bits (yellow 1, dark 0), the queried one framed once asked; bottom
        row: the ``delay + 2`` steps, a disc under the current one."""
        width = max(self.num_bits, self.horizon)
        colours = np.empty((2, width, 3), dtype=np.uint8)  # (rows, cells, RGB)
        colours[:] = BLANK
        bits = (self.cue[row] >> np.arange(self.num_bits, dtype=np.uint64)) & np.uint64(1)
        colours[0, : self.num_bits] = np.where(bits[:, None] == 1, ON, OFF)
        image = grid_picture(colours, cell)
        now = int(self.elapsed[row])
        if now > self.delay:
            frame_cell(image, 0, int(self.query_phase[row]) - 2, TARGET_FRAME, cell)
        paint_disc(image, 1, min(now, self.horizon - 1), MARKER, cell)
        return image

    def _observation(self, bits: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """``[N, 2 * num_bits + 2]`` from bit codes ``[N]`` (uint64) and phases ``[N]``."""
        if self._table is not None:
            index = (phase << 8) + (bits & np.uint64(0xFF)).astype(np.int64)
            return self._table.take(index, axis=0)
        n, k = len(bits), self.num_bits
        obs = np.empty((n, 2 * k + 2), dtype=np.float32)
        low_bytes = bits.view(np.uint8).reshape(n, 8)[:, : self._num_bytes]  # little-endian
        obs[:, :k] = _BYTE_BITS.take(low_bytes, axis=0).reshape(n, -1)[:, :k]
        obs[:, k:] = self._flags.take(phase, axis=0)
        return obs


class CueRecallEnv(TaskEnv):
    """Cue recall: ``num_bits`` random bits shown once, noise for ``delay`` steps, then a query.

    ## Description

    The first observation shows ``num_bits`` random bits (with the cue flag set). For the next
    ``delay`` steps the same slots show fresh random bits (distractor noise, cue flag off). Then
    a query names one bit (one-hot, query flag set) and the agent answers with its value. Tests
    *memory capacity over a delay*: all bits must be kept, since the queried one is unknown
    until the end, and the memory must ignore inputs that look like the cue.

    ## Action Space

    ``Discrete(2)``: the answer (0 or 1). Actions before the query are ignored.

    ## Observation Space

    ``Box(0, 1, (2 * num_bits + 2,), float32)``:
    ``[bits (num_bits), query one-hot (num_bits), cue flag, query flag]``.

    ## Rewards

    +1 for the right answer, -1 for the wrong one, 0 on every other step. Optimal return 1.
    Memoryless return 0 (the query observation says nothing about the bit's value). A policy
    that keeps ``m`` of the bits scores ``m / num_bits``.

    ## Starting State

    Bits uniform; queried bit uniform over ``num_bits``.

    ## Episode End

    Terminated after the answer: every episode lasts ``delay + 2`` steps.

    ## Arguments

    - ``num_bits`` (4): how many bits to hold (1 to 64), the capacity knob.
    - ``delay`` (10): noise steps between cue and query, the duration knob.

    ## Rendering

    ``render_mode="rgb_array"``: ``[32, 16 * max(num_bits, delay + 2), 3]`` uint8: the cue
    bits (yellow 1, dark 0; always drawn, though the agent sees them once), the queried bit
    framed in white once the query is shown, and a blue disc under the current step.

    ## Info

    ``info["memory_target"]``: the first cue bit (0 or 1). Every bit must be held alike until
    the query names one, so the first stands for all of them; it is the answer in the
    episodes that query bit 0. ``info["memory_age"]``: steps since the cue was shown, the
    elapsed steps (0 at the first observation). See :mod:`envs.core`.

    ## Version History

    - v0: initial version.
    """

    task_class = CueRecall
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class CueRecallVectorEnv(TaskVectorEnv):
    """``N`` cue-recall tasks stepped together (see :class:`CueRecallEnv`); SAME_STEP autoreset."""

    task_class = CueRecall
