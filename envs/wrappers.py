"""Observation wrappers that make any Gymnasium env partially observable."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np


class MaskObservation(gym.ObservationWrapper):
    """Keep only the observation entries at ``keep_indices`` of a flat ``Box`` observation.

    Used to hide velocities: CartPole keeps cart position and pole angle (indices 0 and 2), so a
    policy must infer the velocities from the history of observations.

    Args:
        env: an env with a 1-D ``Box`` observation space.
        keep_indices: indices of the observation vector to keep, in order.
    """

    def __init__(self, env: gym.Env, keep_indices: Sequence[int]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"MaskObservation needs a 1-D Box observation space, got {space}")
        self.keep_indices = np.asarray(keep_indices, dtype=np.int64)
        if self.keep_indices.size == 0 or np.any(self.keep_indices >= space.shape[0]):
            raise ValueError(
                f"MaskObservation: keep_indices {list(keep_indices)} must be non-empty and < "
                f"{space.shape[0]}"
            )
        self.observation_space = gym.spaces.Box(
            low=space.low[self.keep_indices],
            high=space.high[self.keep_indices],
            dtype=space.dtype,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep_indices]


def cartpole_no_velocity(**kwargs) -> gym.Env:
    """CartPole-v1 observing cart position and pole angle only (no velocities)."""
    return MaskObservation(gym.make("CartPole-v1", **kwargs).unwrapped, keep_indices=[0, 2])


def pendulum_no_velocity(**kwargs) -> gym.Env:
    """Pendulum-v1 observing cos and sin of the angle only (no angular velocity)."""
    return MaskObservation(gym.make("Pendulum-v1", **kwargs).unwrapped, keep_indices=[0, 1])
