"""The previous action and reward as core inputs (RL^2: Duan et al. 2016, Wang et al. 2016).

With ``policy.prev_action`` / ``policy.prev_reward`` the core reads, beside the encoded
observation, the action taken and the reward received at the step before (one-hot for discrete
actions, ``Box`` actions rescaled to ``[-1, 1]``, the reward). Both are zero wherever
``episode_start`` is set, mid-sequence included, so nothing leaks across episodes. Actions and
rewards are given as the env gave them (the action sent to ``env.step``, the raw reward), so a
plain Gymnasium loop passes back exactly what it used.

The reward is standardised by running statistics of the env's raw rewards (kept in the policy,
saved in checkpoints): a reward of ``0.01`` per success would otherwise barely move the core.
The collector folds each rollout's rewards in at the start of the next rollout (after that
rollout's update, so stored log-probs stay exact); acting and evaluation never change them.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from recurrl.policy.encoders import action_preprocessor
from recurrl.policy.normalize import RunningNormalizer


def null_action(space: spaces.Space, batch_size: int) -> np.ndarray:
    """A valid placeholder env action per row (start values / zeros), used before any step."""
    if isinstance(space, spaces.Discrete):
        return np.full(batch_size, space.start, dtype=np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        return np.broadcast_to(space.start, (batch_size, *space.shape)).astype(np.int64)
    if isinstance(space, spaces.Box):
        zeros = np.zeros((batch_size, *space.shape), dtype=np.float64)
        return np.clip(zeros, space.low, space.high).astype(space.dtype)
    return np.zeros((batch_size, *space.shape), dtype=np.int8)


class PreviousInputs(nn.Module):
    """``(prev_action[T, B, *action_shape], prev_reward[T, B]) -> features[T, B, P]``.

    Args:
        action_space: the env's action space (``prev_action`` is in its format).
        use_action: feed the previous action; use_reward: feed the previous reward.
    """

    def __init__(self, action_space: spaces.Space, use_action: bool, use_reward: bool) -> None:
        super().__init__()
        self.action_space = action_space
        self.action = action_preprocessor(action_space) if use_action else None
        self.use_reward = use_reward
        self.reward_normalizer = RunningNormalizer(()) if use_reward else None
        action_features = self.action.out_features if self.action is not None else 0
        self.out_features = action_features + int(use_reward)

    def forward(
        self,
        prev_action: Tensor | None,
        prev_reward: Tensor | None,
        episode_start: Tensor,
        dtype: torch.dtype,
    ) -> Tensor:
        T, B = episode_start.shape
        parts = []
        if self.action is not None:
            if prev_action is None:
                raise ValueError("this policy reads the previous action: pass prev_action")
            flat = prev_action.reshape(T * B, *prev_action.shape[2:])  # (T*B, ...)
            parts.append(self.action(flat, dtype).view(T, B, -1))
        if self.use_reward:
            if prev_reward is None:
                raise ValueError("this policy reads the previous reward: pass prev_reward")
            reward = self.reward_normalizer(prev_reward.to(dtype))
            parts.append(reward.view(T, B, 1))
        starts = episode_start.bool().unsqueeze(-1)  # (T, B, 1)
        features = torch.cat(parts, dim=-1)  # (T, B, P)
        return features.masked_fill(starts, 0.0)
