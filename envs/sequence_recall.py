"""Sequence recall: watch ``length`` symbols, then reproduce them in order."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import Task, TaskEnv, TaskVectorEnv, below, draw, symbol_tape


class SequenceRecall(Task):
    """Batched sequence recall (see :class:`SequenceRecallEnv`)."""

    def __init__(self, num_envs: int, length: int = 5, num_symbols: int = 4) -> None:
        super().__init__(num_envs)
        if length < 1 or num_symbols < 2:
            raise ValueError(
                f"SequenceRecall: need length >= 1, num_symbols >= 2, got {length=}, {num_symbols=}"
            )
        self.length, self.num_symbols = length, num_symbols
        self.memory_classes = num_symbols
        self.horizon = 2 * length
        self.observation_space = spaces.Box(0.0, 1.0, shape=(num_symbols + 2,), dtype=np.float32)
        self.action_space = spaces.Discrete(num_symbols)
        # Observation by index: symbol s < num_symbols shown (with the show flag), num_symbols
        # recall phase (recall flag), num_symbols + 1 after the episode (all zeros).
        self._observations = np.zeros((num_symbols + 2, num_symbols + 2), dtype=np.float32)
        self._observations[:num_symbols, :num_symbols] = np.eye(num_symbols)
        self._observations[:num_symbols, num_symbols] = 1.0
        self._observations[num_symbols, num_symbols + 1] = 1.0

    def new_episodes(self, rows: np.ndarray) -> None:
        pass  # symbol j of an episode is draw j of its key: nothing to store

    def _observe_at(self, keys: np.ndarray, t: np.ndarray) -> np.ndarray:
        shown = below(draw(keys, t), self.num_symbols)
        later = np.where(t < 2 * self.length, self.num_symbols, self.num_symbols + 1)
        return self._observations.take(np.where(t < self.length, shown, later), axis=0)

    def observe(self, rows: np.ndarray) -> np.ndarray:
        return self._observe_at(self.episode_keys[rows], self.elapsed[rows])

    def memory(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next symbol to recall, shown at step ``max(t - length, 0)``: the one recalled at
        this step during recall (age ``length``), the first symbol before (age ``t``)."""
        age = np.minimum(self.elapsed[rows], self.length)
        shown = self.elapsed[rows] - age
        return below(draw(self.episode_keys[rows], shown), self.num_symbols), age

    def render(self, row: int) -> np.ndarray:
        """The episode's steps in a row (see :func:`envs.core.symbol_tape`): the symbols shown
        so far, the recall steps light blue, the symbol to recall now framed."""
        t = np.arange(self.horizon)
        now = int(self.elapsed[row])
        symbols = below(draw(np.full(self.horizon, self.episode_keys[row]), t), self.num_symbols)
        symbols[t >= self.length] = -2
        symbols[(t > now) & (t < self.length)] = -1
        return symbol_tape(symbols, now, now - self.length if now >= self.length else None)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        position = self.elapsed - self.length  # which symbol this action recalls, if >= 0
        target = below(draw(self.episode_keys, position), self.num_symbols)
        reward = np.where(actions == target, 1.0 / self.length, -1.0 / self.length)
        reward[position < 0] = 0.0
        self.elapsed += 1
        terminated = self.elapsed >= self.horizon
        obs = self._observe_at(self.episode_keys, self.elapsed)
        return obs, reward, terminated, np.zeros_like(terminated)


class SequenceRecallEnv(TaskEnv):
    """Sequence recall: ``length`` random symbols shown one by one, then recalled in order.

    ## Description

    For ``length`` steps the observation shows a uniformly random symbol (with the show flag).
    Then, for ``length`` steps, the observation only says "recall" and the agent must output the
    shown symbols in the order they came. Tests *ordered storage of a sequence* (capacity
    ``length * log2(num_symbols)`` bits, retrieved in order). After POPGym's Autoencode (which
    recalls in reverse).

    ## Action Space

    ``Discrete(num_symbols)``: the recalled symbol (ignored while symbols are shown).

    ## Observation Space

    ``Box(0, 1, (num_symbols + 2,), float32)``: ``[symbol one-hot, show flag, recall flag]``.

    ## Rewards

    ``+1 / length`` per right symbol, ``-1 / length`` per wrong one during recall, 0 while
    symbols are shown: a return lies in [-1, 1]. Optimal return 1. Memoryless return
    ``2 / num_symbols - 1`` (-0.5 for 4 symbols): recall observations are all alike.

    ## Starting State

    The first symbol, uniformly random.

    ## Episode End

    Terminated after ``2 * length`` steps.

    ## Arguments

    - ``length`` (5): symbols to remember.
    - ``num_symbols`` (4): alphabet size.

    ## Rendering

    ``render_mode="rgb_array"``: ``[32, 32 * length, 3]`` uint8, one cell per step: the
    symbols shown so far in colour, the recall steps light blue, the symbol to recall now
    framed in white, a blue disc under the current step.

    ## Info

    ``info["memory_target"]``: the next symbol to recall, the one shown at step ``max(t -
    length, 0)``: during recall the symbol recalled at this step, before it the first symbol.
    ``info["memory_age"]``: steps since it was shown, ``min(t, length)``. See
    :mod:`envs.core`.

    ## Version History

    - v0: initial version.
    """

    task_class = SequenceRecall
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class SequenceRecallVectorEnv(TaskVectorEnv):
    """``N`` sequence-recall tasks stepped together (see :class:`SequenceRecallEnv`)."""

    task_class = SequenceRecall
