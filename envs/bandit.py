"""Bernoulli bandit redrawn every episode: learn which arm pays within the episode (meta-RL)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import EPISODE_STREAM, Task, TaskEnv, TaskVectorEnv, draw, uniform


class Bandit(Task):
    """Batched Bernoulli bandit (see :class:`BanditEnv`)."""

    state_arrays = ("probs",)

    def __init__(
        self, num_envs: int, num_arms: int = 5, horizon: int = 100, observe_previous: bool = True
    ) -> None:
        super().__init__(num_envs)
        if num_arms < 2 or horizon < 1:
            raise ValueError(f"Bandit: need num_arms >= 2, horizon >= 1, got {num_arms}, {horizon}")
        self.num_arms, self.horizon = num_arms, horizon
        size = num_arms + 1 if observe_previous else 1
        self.observation_space = spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)
        self.action_space = spaces.Discrete(num_arms)
        # Observation by index: 0 first step (nothing yet), 1 + 2 * arm + success afterwards.
        self._observations = np.zeros((2 * num_arms + 1, size), dtype=np.float32)
        if observe_previous:
            self._observations[1:, :num_arms] = np.repeat(np.eye(num_arms), 2, axis=0)
            self._observations[2::2, num_arms] = 1.0
        self.probs = np.zeros((num_envs, num_arms))  # success probability of each arm
        self._row_offsets = np.arange(num_envs) * num_arms  # flat index of probs[i, 0]

    def new_episodes(self, rows: np.ndarray) -> None:
        arms = np.arange(self.num_arms)[None]  # (1, A)
        self.probs[rows] = uniform(draw(self.episode_keys[rows, None], EPISODE_STREAM + arms))

    def observe(self, rows: np.ndarray) -> np.ndarray:
        return self._observations.take(np.zeros(len(rows), dtype=np.int64), axis=0)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        p = self.probs.take(self._row_offsets + actions)  # (N,) probability of the pulled arm
        success = uniform(draw(self.episode_keys, self.elapsed)) < p
        self.elapsed += 1
        obs = self._observations.take(1 + 2 * actions + success, axis=0)
        terminated = self.elapsed >= self.horizon
        return obs, success / self.horizon, terminated, np.zeros_like(terminated)


def oracle_return(num_arms: int) -> float:
    """Expected return of always pulling the best arm: E[max of num_arms uniforms]."""
    return num_arms / (num_arms + 1)


class BanditEnv(TaskEnv):
    """Bernoulli bandit whose arm probabilities are redrawn every episode (meta-RL).

    ## Description

    Each episode draws ``num_arms`` success probabilities uniformly in [0, 1] and lasts
    ``horizon`` pulls. The observation carries no information about the arms: only the previous
    action and reward, as in RL^2 (Duan et al., 2016; Wang et al., 2016). Tests *memory as
    learning*: the agent must accumulate evidence about each arm across the episode and trade
    exploration for exploitation.

    ## Action Space

    ``Discrete(num_arms)``: the arm to pull.

    ## Observation Space

    ``Box(0, 1, (num_arms + 1,), float32)``: ``[previous arm one-hot, previous reward]``; all zeros
    at the first step. With ``observe_previous=False``, ``Box(0, 1, (1,), float32)`` always 0: for
    agents that are fed the previous action and reward themselves (recurrl's
    ``policy.prev_action`` and ``policy.prev_reward``).

    ## Rewards

    ``1 / horizon`` per success, so a return is the episode's success rate, in [0, 1].
    Reference points for the defaults (5 arms, 100 pulls): a uniformly random policy 0.5;
    oracle arm (knowing the probabilities) ``num_arms / (num_arms + 1)`` = 0.833; Thompson
    sampling (with memory) about 0.75; best memoryless policy (win-stay, lose-shift, which the
    previous action and reward in the observation allow) about 0.68. Report returns against the
    oracle arm.

    ## Starting State

    Arm probabilities i.i.d. uniform in [0, 1]; the first observation is all zeros.

    ## Episode End

    Terminated after ``horizon`` pulls.

    ## Arguments

    - ``num_arms`` (5): number of arms.
    - ``horizon`` (100): pulls per episode; longer episodes reward learning more.
    - ``observe_previous`` (True): put the previous action and reward in the observation.

    ## Version History

    - v0: initial version.
    """

    task_class = Bandit


class BanditVectorEnv(TaskVectorEnv):
    """``N`` bandit episodes stepped together (see :class:`BanditEnv`); SAME_STEP autoreset."""

    task_class = Bandit
