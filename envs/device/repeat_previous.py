"""Repeat previous on the device: :class:`envs.repeat_previous.RepeatPrevious` as torch ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ..repeat_previous import RepeatPrevious
from .core import TorchTaskVectorEnv, below, draw


class RepeatPreviousTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` repeat-previous tasks on ``device`` (see :class:`envs.repeat_previous.
    RepeatPreviousEnv`); SAME_STEP. Args: ``num_envs``, ``device``, ``max_episode_steps``,
    ``num_symbols`` (4), ``lag`` (3), ``length`` (32)."""

    task_class = RepeatPrevious

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        task = self.spec_task
        self.num_symbols, self.lag, self.horizon = task.num_symbols, task.lag, task.horizon
        self.step_reward = task.step_reward
        self._one_hot = torch.eye(self.num_symbols, dtype=torch.float32, device=self.device)

    def new_episodes(self, mask: Tensor) -> None:
        pass  # symbol t of an episode is draw t of its key: nothing to store

    def symbols(self, t: Tensor) -> Tensor:
        """Symbol shown at time ``t`` [N] of every copy's current episode."""
        return below(draw(self.episode_keys, t), self.num_symbols)

    def observe(self) -> Tensor:
        return self._one_hot[self.symbols(self.elapsed)]

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = self.elapsed
        target = self.symbols(t - self.lag)  # meaningless where t < lag
        reward = torch.where(actions == target, self.step_reward, -self.step_reward)
        reward = torch.where(t < self.lag, 0.0, reward)
        self.elapsed.add_(1)
        obs = self._one_hot[self.symbols(self.elapsed)]
        terminated = self.elapsed >= self.horizon
        return obs, reward, terminated, torch.zeros_like(terminated)
