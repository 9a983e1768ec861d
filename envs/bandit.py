"""Bernoulli bandit redrawn every episode: learn which arm pays within the episode (meta-RL)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import BLANK, EPISODE_STREAM, MARKER, Task, TaskEnv, TaskVectorEnv, draw, uniform


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

    def render(self, row: int, bar: int = 24, height: int = 96) -> np.ndarray:
        """Each arm's success probability as a bar (the best arm darker), above a strip that
        fills as the episode's ``horizon`` steps pass."""
        image = np.full((height + 12, bar * self.num_arms, 3), BLANK, dtype=np.uint8)
        best = int(np.argmax(self.probs[row]))
        for arm, p in enumerate(self.probs[row]):
            top = height - int(round(p * (height - 4)))
            colour = (30, 120, 30) if arm == best else (90, 190, 90)
            image[top:height, arm * bar + 3 : (arm + 1) * bar - 3] = colour
        done = int(round(image.shape[1] * min(1.0, self.elapsed[row] / self.horizon)))
        image[height + 4 : height + 10, :done] = MARKER
        return image

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

    ## Rendering

    ``render_mode="rgb_array"``: ``[108, 24 * num_arms, 3]`` uint8: each arm's success
    probability as a green bar (the best arm darker; hidden from the agent), above a blue strip
    that fills as the episode passes.

    ## Info

    No ``memory_target``: the quantity to learn, the best arm, is never shown (``info`` is
    empty but for the autoreset entries). See :mod:`envs.core`.

    ## Version History

    - v0: initial version.
    """

    task_class = Bandit
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class BanditVectorEnv(TaskVectorEnv):
    """``N`` bandit episodes stepped together (see :class:`BanditEnv`); SAME_STEP autoreset."""

    task_class = Bandit
