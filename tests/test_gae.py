"""GAE against a slow, obvious reference, with terminations, truncations and autoreset steps."""

from __future__ import annotations

import numpy as np
import torch

from recurrl.algo.returns import generalized_advantage_estimate
from tests.conftest import slow_gae


def test_gae_matches_reference_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    T, B = 40, 5
    rewards = rng.normal(size=(T, B))
    values = rng.normal(size=(T, B))
    next_values = rng.normal(size=(T, B))
    terminated = rng.random((T, B)) < 0.1
    truncated = (rng.random((T, B)) < 0.1) & ~terminated
    expected = slow_gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
    tensors = [torch.as_tensor(x, dtype=torch.float64) for x in (rewards, values, next_values)]
    advantages, returns = generalized_advantage_estimate(
        *tensors,
        torch.as_tensor(terminated, dtype=torch.float64),
        torch.as_tensor(truncated, dtype=torch.float64),
        0.97,
        0.9,
    )
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(returns.numpy(), expected + values, rtol=1e-10, atol=1e-10)


def test_truncation_bootstraps_and_termination_does_not():
    # One step episodes: reward 1, value 0, next value 10.
    ones = torch.ones(1, 2)
    zeros = torch.zeros(1, 2)
    next_values = torch.full((1, 2), 10.0)
    terminated = torch.tensor([[1.0, 0.0]])
    truncated = torch.tensor([[0.0, 1.0]])
    advantages, _ = generalized_advantage_estimate(
        ones, zeros, next_values, terminated, truncated, 0.5, 1.0
    )
    assert advantages.tolist() == [[1.0, 1.0 + 0.5 * 10.0]]


def test_reset_only_step_does_not_leak_into_previous_episode():
    # NEXT_STEP autoreset: step 1 ends the episode, step 2 only resets (reward 0, its value is
    # the final observation's), step 3 starts the next episode with a huge reward.
    rewards = torch.tensor([[1.0], [1.0], [0.0], [100.0]])
    values = torch.tensor([[0.5], [0.5], [2.0], [0.0]])
    next_values = torch.tensor([[0.5], [2.0], [0.0], [0.0]])
    terminated = torch.zeros(4, 1)
    truncated = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    advantages, _ = generalized_advantage_estimate(
        rewards, values, next_values, terminated, truncated, 0.9, 0.95
    )
    delta1 = 1.0 + 0.9 * 2.0 - 0.5  # bootstraps from the final observation's value
    delta0 = 1.0 + 0.9 * 0.5 - 0.5
    assert torch.allclose(advantages[1], torch.tensor([delta1]))
    assert torch.allclose(advantages[0], torch.tensor([delta0 + 0.9 * 0.95 * delta1]))


def test_the_doubling_scan_used_on_gpus_matches_the_reference():
    from recurrl.algo.returns import reverse_linear_scan

    rng = np.random.default_rng(1)
    for T in (1, 2, 7, 64, 129):  # powers of two and not
        rewards, values, next_values = rng.normal(size=(3, T, 6))
        terminated = rng.random((T, 6)) < 0.1
        truncated = (rng.random((T, 6)) < 0.1) & ~terminated
        expected = slow_gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
        continues = 1.0 - (terminated | truncated)
        deltas = rewards + 0.97 * next_values * (1.0 - terminated) - values
        factors = torch.as_tensor(0.97 * 0.9 * continues)
        scanned = reverse_linear_scan(factors, torch.as_tensor(deltas))
        np.testing.assert_allclose(scanned.numpy(), expected, rtol=1e-10, atol=1e-10)
