"""Cue recall on the device: :class:`envs.cue_recall.CueRecall` as torch tensor ops."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..cue_recall import CueRecall
from .core import EPISODE_STREAM, TorchTaskVectorEnv, below, draw


class CueRecallTorchVectorEnv(TorchTaskVectorEnv):
    """``N`` cue-recall tasks on ``device`` (see :class:`envs.cue_recall.CueRecallEnv`);
    SAME_STEP. Args: ``num_envs``, ``device``, ``max_episode_steps``, ``num_bits`` (4),
    ``delay`` (10)."""

    task_class = CueRecall
    state_tensors = {"cue": np.uint64, "answer": np.int64, "query_phase": np.int64}

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps=None, **kwargs) -> None:
        super().__init__(num_envs, device, max_episode_steps, **kwargs)
        task = self.spec_task
        self.num_bits, self.delay, self.horizon = task.num_bits, task.delay, task.horizon
        i64 = {"dtype": torch.int64, "device": self.device}
        self.cue = torch.zeros(num_envs, **i64)  # bit b of cue[i] is bit b of copy i
        self.answer = torch.zeros(num_envs, **i64)  # the queried bit's value
        self.query_phase = torch.zeros(num_envs, **i64)  # 2 + queried bit
        self._flags = torch.as_tensor(task._flags, device=self.device)
        self._bit_index = torch.arange(self.num_bits, **i64)

    def new_episodes(self, mask: Tensor) -> None:
        cue = draw(self.episode_keys, EPISODE_STREAM)
        query = below(draw(self.episode_keys, EPISODE_STREAM + 1), self.num_bits)
        self.cue.copy_(torch.where(mask, cue, self.cue))
        self.answer.copy_(torch.where(mask, (cue >> query) & 1, self.answer))
        self.query_phase.copy_(torch.where(mask, 2 + query, self.query_phase))

    def _observation(self, bits: Tensor, phase: Tensor) -> Tensor:
        """``[N, 2 * num_bits + 2]``: the low ``num_bits`` bits of ``bits``, then the flags."""
        shown = ((bits[:, None] >> self._bit_index) & 1).to(torch.float32)
        return torch.cat([shown, self._flags[phase]], dim=1)

    def observe(self) -> Tensor:
        return self._observation(self.cue, torch.zeros_like(self.elapsed))  # the cue first

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        answered = self.elapsed == self.delay + 1  # this step's action answers the query
        reward = answered * torch.where(actions == self.answer, 1.0, -1.0)
        self.elapsed.add_(1)
        noisy = self.elapsed <= self.delay
        after = torch.where(answered, 2 + self.num_bits, self.query_phase)
        phase = torch.where(noisy, 1, after)
        bits = torch.where(noisy, draw(self.episode_keys, self.elapsed), 0)
        return self._observation(bits, phase), reward, answered, torch.zeros_like(answered)
