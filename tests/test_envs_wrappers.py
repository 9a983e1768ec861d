"""Observation wrappers: MaskObservation, Flicker, ObservationNoise."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from recurrl.envs.wrappers import Flicker, MaskObservation, ObservationNoise


def clean_and_wrapped(wrapper, steps: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations ``[steps, 4]`` of CartPole and of ``wrapper(CartPole)``, same seed/actions.

    CartPole draws from ``np_random`` only at reset and every reset is seeded, so the wrapper's
    draws do not change the dynamics: the two runs see the same states.
    """
    runs = []
    for env in (gym.make("CartPole-v1"), wrapper(gym.make("CartPole-v1"))):
        episode = 0
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for t in range(steps - 1):
            obs, _, terminated, truncated, _ = env.step(t % 2)  # alternate: stays up long
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + 1000 * episode)
            out.append(obs)
        runs.append(np.array(out))
    return runs[0], runs[1]


def test_mask_keeps_chosen_indices() -> None:
    clean, kept = clean_and_wrapped(lambda env: MaskObservation(env, [0, 2]))
    np.testing.assert_array_equal(kept, clean[:, [0, 2]])
    _, hidden = clean_and_wrapped(lambda env: MaskObservation(env, hide_indices=[1, 3]))
    np.testing.assert_array_equal(hidden, kept)
    env = MaskObservation(gym.make("CartPole-v1"), [3, 0])
    assert env.observation_space.shape == (2,)
    assert env.observation_space.high[1] == gym.make("CartPole-v1").observation_space.high[0]


@pytest.mark.parametrize(
    ("keep", "hide"), [(None, None), ([0], [1]), ([], None), ([4], None), (None, [0, 1, 2, 3])]
)
def test_mask_refuses_bad_indices(keep, hide) -> None:
    with pytest.raises(ValueError):
        MaskObservation(gym.make("CartPole-v1"), keep, hide_indices=hide)


def test_existing_ids_still_mask_velocity() -> None:
    assert gym.make("recurrl/CartPoleNoVelocity-v0").observation_space.shape == (2,)
    assert gym.make("recurrl/PendulumNoVelocity-v0").observation_space.shape == (2,)


def test_flicker_blanks_at_rate_p() -> None:
    p, steps = 0.3, 4000
    clean, flickered = clean_and_wrapped(lambda env: Flicker(env, p), steps=steps)
    blank = (flickered == 0).all(axis=1)
    assert abs(blank.mean() - p) < 3 * np.sqrt(p * (1 - p) / steps)
    np.testing.assert_array_equal(flickered[~blank], clean[~blank])  # others untouched
    assert all(obs in Flicker(gym.make("CartPole-v1"), p).observation_space for obs in flickered)


def test_flicker_is_seeded_and_widens_space() -> None:
    _, first = clean_and_wrapped(lambda env: Flicker(env, 0.5), steps=50, seed=3)
    _, again = clean_and_wrapped(lambda env: Flicker(env, 0.5), steps=50, seed=3)
    np.testing.assert_array_equal(first, again)
    env = Flicker(gym.make("recurrl/Bandit-v0"), 0.5)
    assert env.observation_space == gym.make("recurrl/Bandit-v0").observation_space
    with pytest.raises(ValueError):
        Flicker(gym.make("CartPole-v1"), 1.5)


def test_observation_noise_has_the_right_std() -> None:
    std, steps = 0.2, 3000
    clean, noisy = clean_and_wrapped(lambda env: ObservationNoise(env, std), steps=steps)
    noise = noisy - clean  # (steps, 4)
    assert np.abs(noise.mean(axis=0)).max() < 4 * std / np.sqrt(steps)
    np.testing.assert_allclose(noise.std(axis=0), std, rtol=0.05)
    assert noisy.dtype == np.float32
    env = ObservationNoise(gym.make("CartPole-v1"), std)
    assert np.isinf(env.observation_space.high).all()
    with pytest.raises(ValueError):
        ObservationNoise(gym.make("recurrl/MemoryGrid-v0"), std)  # uint8 images
