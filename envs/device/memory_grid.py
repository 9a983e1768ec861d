"""Memory grid on the device: :class:`envs.memory_grid.MemoryGrid` as torch tensor ops.

Observations are ``[N, view, view, 2]`` uint8, the dtype of the env's image space.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..memory_grid import MemoryGrid
from .core import EPISODE_STREAM, TorchTaskVectorEnv, below, draw


class MemoryGridTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` memory grids on ``device`` (see :class:`envs.memory_grid.MemoryGridEnv`);
    SAME_STEP, uint8 image observations. Args: ``num_envs``, ``device``,
    ``max_episode_steps``, ``length`` (6), ``view`` (5), ``num_colors`` (2), ``time_budget``
    (``8 * (length + 2)``)."""

    task_class = MemoryGrid
    state_tensors = {"position": np.int64, "config": np.int64, "matching_side": np.int64}

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        task = self.spec_task
        self.view, self.horizon = task.view, task.horizon
        self.num_positions, self._start = task.num_positions, task._start
        self._num_configs = task._num_configs
        self._next = torch.as_tensor(task._next, device=self.device)
        self._touch = torch.as_tensor(task._touch, device=self.device)
        self._views = torch.as_tensor(task._views, device=self.device)
        i64 = {"dtype": torch.int64, "device": self.device}
        self.position = torch.zeros(num_envs, **i64)  # index into the walkable cells
        self.config = torch.zeros(num_envs, **i64)  # index into the colourings
        self.matching_side = torch.zeros(num_envs, **i64)  # 1 top, 2 bottom

    def new_episodes(self, mask: Tensor) -> None:
        config = below(draw(self.episode_keys, EPISODE_STREAM), self._num_configs)
        self.position.masked_fill_(mask, self._start)
        self.config.copy_(torch.where(mask, config, self.config))
        self.matching_side.copy_(torch.where(mask, 1 + config % 2, self.matching_side))

    def _observe(self) -> Tensor:
        flat = self._views[self.config * self.num_positions + self.position]
        return flat.reshape(self.num_envs, self.view, self.view, 2)

    def observe(self) -> Tensor:
        return self._observe()

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        move = self.position * 4 + actions
        touched = self._touch[move]  # 0 nothing, 1 top candidate, 2 bottom candidate
        self.position.copy_(self._next[move])
        self.elapsed.add_(1)
        out_of_time = (self.elapsed >= self.horizon) & (touched == 0)
        reward = torch.where(touched == self.matching_side, 1.0, -1.0)
        reward = torch.where((touched == 0) & ~out_of_time, 0.0, reward)
        terminated = (touched > 0) | out_of_time
        return self._observe(), reward, terminated, torch.zeros_like(terminated)
