"""Repeat previous: at every step, name the symbol seen ``lag`` steps ago."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import Task, TaskEnv, TaskVectorEnv, below, draw, symbol_tape


class RepeatPrevious(Task):
    """Batched repeat-previous (see :class:`RepeatPreviousEnv`)."""

    def __init__(self, num_envs: int, num_symbols: int = 4, lag: int = 3, length: int = 32) -> None:
        super().__init__(num_envs)
        if num_symbols < 2 or lag < 1 or length <= lag:
            raise ValueError(
                f"RepeatPrevious: need num_symbols >= 2, lag >= 1, length > lag, got "
                f"{num_symbols=}, {lag=}, {length=}"
            )
        self.num_symbols, self.lag, self.horizon = num_symbols, lag, length
        self.memory_classes = num_symbols
        self.step_reward = 1.0 / (length - lag)  # so that a return lies in [-1, 1]
        self.observation_space = spaces.Box(0.0, 1.0, shape=(num_symbols,), dtype=np.float32)
        self.action_space = spaces.Discrete(num_symbols)
        self._one_hot = np.eye(num_symbols, dtype=np.float32)

    def new_episodes(self, rows: np.ndarray) -> None:
        pass  # symbol t of an episode is draw t of its key: nothing to store

    def symbols(self, keys: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Symbol shown at time ``t`` ``[N]`` of the episodes with ``keys`` ``[N]``."""
        return below(draw(keys, t), self.num_symbols)

    def observe(self, rows: np.ndarray) -> np.ndarray:
        return self._one_hot.take(self.symbols(self.episode_keys[rows], self.elapsed[rows]), 0)

    def memory(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next symbol to name, seen at step ``max(t - lag, 0)``: the one named at this step
        from ``t = lag`` on (age ``lag``), the first symbol before (age ``t``)."""
        age = np.minimum(self.elapsed[rows], self.lag)
        return self.symbols(self.episode_keys[rows], self.elapsed[rows] - age), age

    def render(self, row: int) -> np.ndarray:
        """The episode's steps in a row (see :func:`envs.core.symbol_tape`): the symbols seen
        so far, the one to name now framed, a disc under the current step."""
        t = np.arange(self.horizon)
        now = int(self.elapsed[row])
        symbols = self.symbols(np.full(self.horizon, self.episode_keys[row]), t)
        symbols[t > now] = -1
        return symbol_tape(symbols, now, now - self.lag if now >= self.lag else None)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        t = self.elapsed
        target = self.symbols(self.episode_keys, t - self.lag)  # meaningless where t < lag
        reward = np.where(actions == target, self.step_reward, -self.step_reward)
        reward[t < self.lag] = 0.0
        self.elapsed += 1
        obs = self._one_hot.take(self.symbols(self.episode_keys, self.elapsed), axis=0)
        terminated = self.elapsed >= self.horizon
        return obs, reward, terminated, np.zeros_like(terminated)


class RepeatPreviousEnv(TaskEnv):
    """Repeat previous: a stream of random symbols; output the one seen ``lag`` steps ago.

    ## Description

    Every observation is a fresh uniformly random symbol (one of ``num_symbols``). From step
    ``lag`` on, the action is scored against the symbol observed ``lag`` steps earlier. Tests a
    *sliding-window memory*: the last ``lag`` symbols must be kept in order and old ones
    dropped, every step. After POPGym's RepeatPrevious (Morad et al., 2023).

    ## Action Space

    ``Discrete(num_symbols)``: the symbol seen ``lag`` steps ago.

    ## Observation Space

    ``Box(0, 1, (num_symbols,), float32)``: one-hot of the current symbol.

    ## Rewards

    ``+1 / (length - lag)`` for a right answer, ``-1 / (length - lag)`` for a wrong one, 0 for the
    first ``lag`` steps, so a return lies in [-1, 1]. Optimal return 1. Memoryless return
    ``2 / num_symbols - 1`` (the target is independent of the current symbol): -0.5 for 4
    symbols.

    ## Starting State

    A uniformly random symbol.

    ## Episode End

    Terminated after ``length`` steps.

    ## Arguments

    - ``num_symbols`` (4): alphabet size.
    - ``lag`` (3): how far back to answer, the memory length.
    - ``length`` (32): steps per episode.

    ## Rendering

    ``render_mode="rgb_array"``: ``[32, 16 * length, 3]`` uint8, one cell per step: the
    symbols seen so far in colour, the one to name now framed in white, a blue disc under the
    current step.

    ## Info

    ``info["memory_target"]``: the next symbol to name, the one seen at step ``max(t - lag,
    0)``: from step ``lag`` on the symbol named at this step, before it the first symbol.
    ``info["memory_age"]``: steps since it was seen, ``min(t, lag)``. See :mod:`envs.core`.

    ## Version History

    - v0: initial version.
    """

    task_class = RepeatPrevious
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class RepeatPreviousVectorEnv(TaskVectorEnv):
    """``N`` repeat-previous tasks stepped together (see :class:`RepeatPreviousEnv`)."""

    task_class = RepeatPrevious
