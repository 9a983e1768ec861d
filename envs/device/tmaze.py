"""Passive T-maze on the device: :class:`envs.tmaze.TMaze` as torch tensor ops."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..tmaze import _CORRIDOR, _JUNCTION, _OBSERVATIONS, FORWARD, UP, TMaze
from .core import EPISODE_STREAM, TorchTaskVectorEnv, draw, srl


class TMazeTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` passive T-mazes on ``device`` (see :class:`envs.tmaze.TMazeEnv`); SAME_STEP.

    Args: ``num_envs``, ``device``, ``max_episode_steps``, ``length`` (20), ``time_budget``
    (``2 * (length + 1)``), as :class:`envs.tmaze.TMazeVectorEnv`.
    """

    task_class = TMaze
    state_tensors = {"position": np.int64, "goal": np.int64}

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        self.length = self.spec_task.length
        self.horizon = self.spec_task.horizon
        self.bump_penalty = self.spec_task.bump_penalty
        self.position = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.goal = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._observations = torch.as_tensor(_OBSERVATIONS, device=self.device)

    def new_episodes(self, mask: Tensor) -> None:
        self.position.masked_fill_(mask, 0)
        goal = UP + srl(draw(self.episode_keys, EPISODE_STREAM), 63)
        self.goal.copy_(torch.where(mask, goal, self.goal))

    def _situation(self) -> Tensor:
        return torch.where(self.position == self.length, _JUNCTION, _CORRIDOR)

    def observe(self) -> Tensor:
        cue = self.goal - UP  # _CUE_UP or _CUE_DOWN
        return self._observations[torch.where(self.elapsed == 0, cue, self._situation())]

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        at_junction = self.position == self.length
        forward = actions == FORWARD
        turned = at_junction & ~forward
        moved = forward & ~at_junction
        self.position.add_(moved.to(torch.int64))
        self.elapsed.add_(1)
        out_of_time = (self.elapsed >= self.horizon) & ~turned
        answer = torch.where(actions == self.goal, 1.0, -1.0)
        reward = torch.where(turned, answer, torch.where(moved, 0.0, -self.bump_penalty))
        reward = torch.where(out_of_time, -1.0, reward)
        obs = self._observations[self._situation()]
        return obs, reward, turned | out_of_time, torch.zeros_like(turned)
