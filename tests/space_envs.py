"""Tiny envs built from spaces, for the space tests (importing this registers their ids).

- ``recurrl_test/RandomSpace-v0``: observations sampled from any observation space, random
  rewards, fixed episode length; spaces given as objects or as ``recurrl.policy.spaces`` dicts (so a
  YAML / dotted config can name them).
- ``recurrl_test/DictCue-v0``: a ``Dict`` observation whose ``cue`` names the rewarded action.
- ``recurrl_test/MultiTarget-v0``: ``MultiDiscrete`` actions that must match a shown target.
- ``recurrl_test/TextObservation-v0``: a ``Text`` observation (refused by the policy).
- :class:`BlankObservation`: a wrapper that hides the observation (constant zeros).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from recurrl.policy.spaces import ACTION_MASK_KEY, space_from_dict


def _space(space: spaces.Space | dict[str, Any]) -> spaces.Space:
    return space_from_dict(space) if isinstance(space, dict) else space


class RandomSpaceEnv(gym.Env):
    """Samples observations from its own observation space with ``np_random``.

    Rewards are standard normal, episodes end after ``episode_length`` steps (``terminated``, or
    ``truncated`` with ``truncate=True``). A top-level ``action_mask`` (Dict observations) is
    random with at least one valid action (per part, for MultiDiscrete actions).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        observation_space: spaces.Space | dict,
        action_space: spaces.Space | dict,
        episode_length: int = 5,
        truncate: bool = False,
    ) -> None:
        self.observation_space = _space(observation_space)
        self.action_space = _space(action_space)
        self.episode_length = episode_length
        self.truncate = truncate
        self.elapsed = 0

    def _observe(self) -> Any:
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        obs = self.observation_space.sample()
        if isinstance(obs, dict) and ACTION_MASK_KEY in obs:
            obs[ACTION_MASK_KEY] = self._random_mask(obs[ACTION_MASK_KEY])
        return obs

    def _random_mask(self, like: np.ndarray) -> np.ndarray:
        mask = (self.np_random.random(like.shape) < 0.5).astype(like.dtype)
        nvec = getattr(self.action_space, "nvec", np.array([getattr(self.action_space, "n", 0)]))
        start = 0
        for n in np.asarray(nvec).reshape(-1):  # at least one valid action per part
            mask[start + self.np_random.integers(n)] = 1
            start += int(n)
        return mask

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.elapsed = 0
        return self._observe(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype))
        self.elapsed += 1
        ended = self.elapsed >= self.episode_length
        reward = float(self.np_random.normal())
        return self._observe(), reward, ended and not self.truncate, ended and self.truncate, {}


class DictCueEnv(gym.Env):
    """``Dict(cue=Discrete(n), noise=Box(2), image=uint8 4x4x1)``: reward 1 for action == cue.

    ``episode_length`` steps with a new cue every step: a random policy scores
    ``episode_length / n``, reading the cue ``episode_length``.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_cues: int = 4, episode_length: int = 8) -> None:
        self.observation_space = spaces.Dict(
            {
                "cue": spaces.Discrete(num_cues),
                "noise": spaces.Box(-1.0, 1.0, (2,), np.float32),
                "image": spaces.Box(0, 255, (4, 4, 1), np.uint8),
            }
        )
        self.action_space = spaces.Discrete(num_cues)
        self.num_cues, self.episode_length = num_cues, episode_length

    def _observe(self) -> dict[str, Any]:
        self.cue = int(self.np_random.integers(self.num_cues))
        return {
            "cue": self.cue,
            "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32),
            "image": self.np_random.integers(0, 256, (4, 4, 1), dtype=np.uint8),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.elapsed = 0
        return self._observe(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.elapsed += 1
        return self._observe(), reward, self.elapsed >= self.episode_length, False, {}


class MultiTargetEnv(gym.Env):
    """Observe a target pair (one-hot, Box); act with ``MultiDiscrete([n, n])``.

    Reward ``0.5`` per matching part; a random policy scores ``1 / n`` per step.
    """

    metadata = {"render_modes": []}

    def __init__(self, n: int = 3, episode_length: int = 8) -> None:
        self.n, self.episode_length = n, episode_length
        self.observation_space = spaces.Box(0.0, 1.0, (2 * n,), np.float32)
        self.action_space = spaces.MultiDiscrete([n, n])

    def _observe(self) -> np.ndarray:
        self.target = self.np_random.integers(self.n, size=2)
        obs = np.zeros(2 * self.n, dtype=np.float32)
        obs[self.target[0]] = obs[self.n + self.target[1]] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.elapsed = 0
        return self._observe(), {}

    def step(self, action):
        reward = 0.5 * float(np.sum(np.asarray(action) == self.target))
        self.elapsed += 1
        return self._observe(), reward, self.elapsed >= self.episode_length, False, {}


class BlankObservation(gym.ObservationWrapper):
    """Replace every observation by zeros of the same space (hides what the env shows)."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.zeros_like(observation)


for _name, _entry, _kwargs in [
    ("RandomSpace-v0", RandomSpaceEnv, {}),
    ("DictCue-v0", DictCueEnv, {}),
    ("MultiTarget-v0", MultiTargetEnv, {}),
    (  # a space no policy takes, for the command-line error test
        "TextObservation-v0",
        RandomSpaceEnv,
        {"observation_space": spaces.Text(8), "action_space": spaces.Discrete(2)},
    ),
]:
    if f"recurrl_test/{_name}" not in gym.registry:
        gym.register(
            f"recurrl_test/{_name}", entry_point=f"{__name__}:{_entry.__name__}", kwargs=_kwargs
        )
