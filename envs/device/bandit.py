"""Bernoulli bandit on the device: :class:`envs.bandit.Bandit` as torch tensor ops."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..bandit import Bandit
from .core import EPISODE_STREAM, TorchTaskVectorEnv, draw, uniform


class BanditTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` Bernoulli bandits on ``device`` (see :class:`envs.bandit.BanditEnv`); SAME_STEP.
    Args: ``num_envs``, ``device``, ``max_episode_steps``, ``num_arms`` (5), ``horizon``
    (100), ``observe_previous`` (True)."""

    task_class = Bandit
    state_tensors = {"probs": np.float64}

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        task = self.spec_task
        self.num_arms, self.horizon = task.num_arms, task.horizon
        self._observations = torch.as_tensor(task._observations, device=self.device)
        self.probs = torch.zeros((num_envs, self.num_arms), dtype=torch.float64, device=self.device)
        self._arms = torch.arange(self.num_arms, device=self.device)[None]  # (1, A)

    def new_episodes(self, mask: Tensor) -> None:
        probs = uniform(draw(self.episode_keys[:, None], EPISODE_STREAM + self._arms))
        self.probs.copy_(torch.where(mask[:, None], probs, self.probs))

    def observe(self) -> Tensor:
        return self._observations[torch.zeros_like(self.elapsed)]

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        p = self.probs.gather(1, actions[:, None])[:, 0]  # (N,) probability of the pulled arm
        success = uniform(draw(self.episode_keys, self.elapsed)) < p
        self.elapsed.add_(1)
        obs = self._observations[1 + 2 * actions + success.to(torch.int64)]
        terminated = self.elapsed >= self.horizon
        reward = (success.to(torch.float64) / self.horizon).to(torch.float32)
        return obs, reward, terminated, torch.zeros_like(terminated)
