"""Sequence recall on the device: :class:`envs.sequence_recall.SequenceRecall` as torch ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sequence_recall import SequenceRecall
from .core import TorchTaskVectorEnv, below, draw


class SequenceRecallTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` sequence-recall tasks on ``device`` (see :class:`envs.sequence_recall.
    SequenceRecallEnv`); SAME_STEP. Args: ``num_envs``, ``device``, ``max_episode_steps``,
    ``length`` (5), ``num_symbols`` (4)."""

    task_class = SequenceRecall

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        task = self.spec_task
        self.length, self.num_symbols, self.horizon = task.length, task.num_symbols, task.horizon
        self._observations = torch.as_tensor(task._observations, device=self.device)

    def new_episodes(self, mask: Tensor) -> None:
        pass  # symbol j of an episode is draw j of its key: nothing to store

    def _observe_at(self, t: Tensor) -> Tensor:
        shown = below(draw(self.episode_keys, t), self.num_symbols)
        later = torch.where(t < 2 * self.length, self.num_symbols, self.num_symbols + 1)
        return self._observations[torch.where(t < self.length, shown, later)]

    def observe(self) -> Tensor:
        return self._observe_at(self.elapsed)

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        position = self.elapsed - self.length  # which symbol this action recalls, if >= 0
        target = below(draw(self.episode_keys, position), self.num_symbols)
        reward = torch.where(actions == target, 1.0 / self.length, -1.0 / self.length)
        reward = torch.where(position < 0, 0.0, reward)
        self.elapsed.add_(1)
        terminated = self.elapsed >= self.horizon
        return self._observe_at(self.elapsed), reward, terminated, torch.zeros_like(terminated)
