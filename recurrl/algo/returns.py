"""Returns and advantages: GAE over ``[T, B]`` rollouts and PPO's running reward scaling.

GAE keeps ``terminated`` and ``truncated`` apart: a terminated step bootstraps from nothing, a
truncated one from the value of its final observation (``next_values``, filled by the
collector, :mod:`recurrl.algo.rollout`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def generalized_advantage_estimate(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """GAE (Schulman et al. 2016, https://arxiv.org/abs/1506.02438) over ``[T, B]`` tensors.

    Args:
        rewards: ``r_t``.
        values: ``V(s_t)``.
        next_values: value of the observation that follows step t *in the same episode*
            (for a truncated step: the final observation's value); ignored where terminated.
        terminated: 1 where the episode ended at step t (no bootstrap).
        truncated: 1 where the episode was cut at step t (bootstrap from ``next_values``).
        gamma: discount; gae_lambda: GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``[T, B]``; ``returns = advantages + values``.
    """
    terminated = terminated.to(values.dtype)
    episode_continues = 1.0 - torch.maximum(terminated, truncated.to(values.dtype))
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values
    if values.device.type != "cpu":  # a few dozen kernel launches instead of 3 per step
        advantages = reverse_linear_scan(gamma * gae_lambda * episode_continues, deltas)
        return advantages, advantages + values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        running = deltas[t] + gamma * gae_lambda * episode_continues[t] * running
        advantages[t] = running
    return advantages, advantages + values


def reverse_linear_scan(factors: Tensor, terms: Tensor) -> Tensor:
    """``a`` with ``a[t] = terms[t] + factors[t] * a[t + 1]`` (``a[T] = 0``), over dim 0.

    GAE's recurrence, solved by recursive doubling (Hillis and Steele) in ``ceil(log2 T)``
    rounds of whole-tensor ops: after the round with offset ``k``, ``terms[t]`` holds the sum
    over steps ``t .. t + 2k - 1`` and ``factors[t]`` their product. Equal to the step loop up
    to rounding (the sums are added in another order).
    """
    steps, offset = terms.shape[0], 1
    while offset < steps:
        head = terms[:-offset] + factors[:-offset] * terms[offset:]
        terms = torch.cat([head, terms[-offset:]])
        factors = torch.cat([factors[:-offset] * factors[offset:], factors[-offset:]])
        offset *= 2
    return terms


class RewardScaler:
    """Divide rewards by the running std of the discounted return, per env stream.

    The usual PPO reward scaling (as in Gymnasium's ``NormalizeReward``): the scale follows
    ``Var[G]`` with ``G_t = gamma * G_{t-1} + r_t``, reset at episode ends; rewards are not
    centred, so the sign of a reward is kept.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon
        self.discounted = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def __call__(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray) -> np.ndarray:
        self.discounted = np.where(valid, self.discounted * self.gamma + reward, self.discounted)
        self._update(self.discounted[valid])
        self.discounted[done] = 0.0
        scaled = reward / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip)

    def _update(self, batch: np.ndarray) -> None:
        if batch.size == 0:
            return
        n, total = batch.size, self.count + batch.size
        delta = batch.mean() - self.mean
        m2 = self.var * self.count + batch.var() * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var, self.count = m2 / total, total

    def state_dict(self) -> dict:
        return {
            "discounted": self.discounted.tolist(),
            "mean": self.mean,
            "var": self.var,
            "count": self.count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.discounted = np.asarray(state["discounted"], dtype=np.float64)
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
