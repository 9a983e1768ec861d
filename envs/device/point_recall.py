"""Point recall on the device: :class:`envs.point_recall.PointRecall` as torch tensor ops.

The float64 arithmetic is the numpy task's, operation for operation; ``cos``, ``sin`` and
``hypot`` come from torch's math library rather than numpy's, so positions may differ from the
numpy env's in the last bit of a float64 (float32 observations agree to rounding).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..point_recall import MAX_RADIUS, MIN_RADIUS, PointRecall
from .core import EPISODE_STREAM, TorchTaskVectorEnv, draw, uniform


class PointRecallTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` point-recall tasks on ``device`` (see :class:`envs.point_recall.PointRecallEnv`);
    SAME_STEP. Actions ``[N, 2]`` float32. Args: ``num_envs``, ``device``,
    ``max_episode_steps``, ``delay`` (0), ``travel_steps`` (12), ``max_speed`` (0.1)."""

    task_class = PointRecall
    state_tensors = {
        "position": np.float64,
        "goal": np.float64,
        "distance": np.float64,
        "start_distance": np.float64,
    }

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        task = self.spec_task
        self.delay, self.max_speed, self.horizon = task.delay, task.max_speed, task.horizon
        f64 = {"dtype": torch.float64, "device": self.device}
        self.position = torch.zeros((num_envs, 2), **f64)
        self.goal = torch.zeros((num_envs, 2), **f64)
        self.distance = torch.ones(num_envs, **f64)  # to the goal, now
        self.start_distance = torch.ones(num_envs, **f64)

    def new_episodes(self, mask: Tensor) -> None:
        keys = self.episode_keys
        angle = 2 * math.pi * uniform(draw(keys, EPISODE_STREAM))
        radius = MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * uniform(draw(keys, EPISODE_STREAM + 1))
        goal = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        distance = torch.hypot(goal[:, 0], goal[:, 1])  # as step measures it
        self.goal.copy_(torch.where(mask[:, None], goal, self.goal))
        self.position.masked_fill_(mask[:, None], 0.0)
        self.distance.copy_(torch.where(mask, distance, self.distance))
        self.start_distance.copy_(torch.where(mask, distance, self.start_distance))

    def observe(self) -> Tensor:
        obs = torch.zeros((self.num_envs, 5), dtype=torch.float32, device=self.device)
        obs[:, 2:4] = self.goal  # first observation: start and goal
        obs[:, 4] = 1.0
        return obs

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        moving = (self.elapsed > self.delay)[:, None]  # frozen while the goal is shown, and delay
        speed = self.max_speed * moving.to(torch.float64)  # (a bool tensor times 0.1: float32)
        velocity = actions.clamp(-1.0, 1.0).to(torch.float64) * speed
        self.position.copy_((self.position + velocity).clamp(-1.0, 1.0))
        offset = self.goal - self.position
        distance = torch.hypot(offset[:, 0], offset[:, 1])
        reward = (self.distance - distance) / self.start_distance  # telescopes to 1 - d_T / d_0
        self.distance.copy_(distance)
        self.elapsed.add_(1)
        obs = torch.zeros((self.num_envs, 5), dtype=torch.float32, device=self.device)
        obs[:, :2] = self.position
        terminated = self.elapsed >= self.horizon
        return obs, reward.to(torch.float32), terminated, torch.zeros_like(terminated)
