"""Observation wrappers that make any Gymnasium env partially observable."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np


class MaskObservation(gym.ObservationWrapper):
    """Keep only some entries of a flat ``Box`` observation (hide the others).

    Used to hide velocities: CartPole keeps cart position and pole angle (indices 0 and 2), so a
    policy must infer the velocities from the history of observations. Give either the indices
    to keep or, with ``hide_indices``, the ones to drop.

    Args:
        env: an env with a 1-D ``Box`` observation space.
        keep_indices: indices of the observation vector to keep, in order.
        hide_indices: indices to drop instead (the rest are kept in order).
    """

    def __init__(
        self,
        env: gym.Env,
        keep_indices: Sequence[int] | None = None,
        *,
        hide_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__(env)
        space = _flat_box(env.observation_space, "MaskObservation")
        size = space.shape[0]
        if (keep_indices is None) == (hide_indices is None):
            raise ValueError("MaskObservation: give exactly one of keep_indices, hide_indices")
        chosen = np.asarray(keep_indices if hide_indices is None else hide_indices, np.int64)
        if (chosen.size == 0 and hide_indices is None) or np.any((chosen >= size) | (chosen < 0)):
            raise ValueError(
                f"MaskObservation: indices {chosen.tolist()} must be in [0, {size}) and "
                f"keep_indices non-empty"
            )
        if hide_indices is not None:
            chosen = np.setdiff1d(np.arange(size), chosen)
            if chosen.size == 0:
                raise ValueError("MaskObservation: hide_indices hides every entry")
        self.keep_indices = chosen
        self.observation_space = gym.spaces.Box(
            low=space.low[self.keep_indices],
            high=space.high[self.keep_indices],
            dtype=space.dtype,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep_indices]


class Flicker(gym.ObservationWrapper):
    """Replace the whole observation by zeros with probability ``p`` (flickering screen).

    Every observation, the first of an episode included, is blanked independently, drawing from
    the env's ``np_random`` (so a seeded reset makes the flicker reproducible). A memoryless
    policy must act blind on blank steps; a recurrent one can carry the last frame. After
    Hausknecht & Stone (2015), "Deep Recurrent Q-Learning for POMDPs" (flickering Atari).

    Args:
        env: an env with a ``Box`` observation space (widened to contain 0 if needed).
        p: probability of blanking, in [0, 1].
    """

    def __init__(self, env: gym.Env, p: float) -> None:
        super().__init__(env)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Flicker: p must be in [0, 1], got {p}")
        space = _box(env.observation_space, "Flicker")
        self.p = p
        self.observation_space = gym.spaces.Box(
            low=np.minimum(space.low, 0), high=np.maximum(space.high, 0), dtype=space.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self.np_random.random() < self.p:
            return np.zeros_like(observation)
        return observation


class ObservationNoise(gym.ObservationWrapper):
    """Add Gaussian noise of standard deviation ``std`` to every observation entry.

    Noise comes from the env's ``np_random``. The observation space becomes unbounded (noise
    can leave any box) and keeps its float dtype.

    Args:
        env: an env with a floating-point ``Box`` observation space.
        std: noise standard deviation, >= 0.
    """

    def __init__(self, env: gym.Env, std: float) -> None:
        super().__init__(env)
        space = _box(env.observation_space, "ObservationNoise")
        if not np.issubdtype(space.dtype, np.floating) or std < 0:
            raise ValueError(
                f"ObservationNoise: needs a float Box and std >= 0, got {space} and {std=}"
            )
        self.std = std
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, space.shape, dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        noise = self.np_random.normal(0.0, self.std, size=np.shape(observation))
        return (observation + noise).astype(self.observation_space.dtype)


def _box(space: gym.Space, wrapper: str) -> gym.spaces.Box:
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{wrapper} needs a Box observation space, got {space}")
    return space


def _flat_box(space: gym.Space, wrapper: str) -> gym.spaces.Box:
    if len(_box(space, wrapper).shape) != 1:
        raise ValueError(f"{wrapper} needs a 1-D Box observation space, got {space}")
    return space


def cartpole_no_velocity(**kwargs) -> gym.Env:
    """CartPole-v1 observing cart position and pole angle only (no velocities)."""
    return MaskObservation(gym.make("CartPole-v1", **kwargs).unwrapped, keep_indices=[0, 2])


def pendulum_no_velocity(**kwargs) -> gym.Env:
    """Pendulum-v1 observing cos and sin of the angle only (no angular velocity)."""
    return MaskObservation(gym.make("Pendulum-v1", **kwargs).unwrapped, keep_indices=[0, 1])
