"""Action heads: features -> action distribution, chosen from the action space."""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from recurrl.policy.encoders import layer_init
from recurrl.spaces import UnsupportedSpaceError


class CategoricalHead(nn.Module):
    """``Discrete`` actions: logits -> categorical. Actions are stored as int64 ``[...]``."""

    def __init__(self, in_features: int, space: spaces.Discrete) -> None:
        super().__init__()
        self.start = int(space.start)
        self.logits = layer_init(nn.Linear(in_features, int(space.n)), std=0.01)
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = torch.int64

    def forward(self, features: Tensor) -> Categorical:
        return Categorical(logits=self.logits(features), validate_args=False)

    @staticmethod
    def log_prob(dist: Categorical, action: Tensor) -> Tensor:
        return dist.log_prob(action)

    @staticmethod
    def entropy(dist: Categorical) -> Tensor:
        return dist.entropy()

    @staticmethod
    def mode(dist: Categorical) -> Tensor:
        return dist.logits.argmax(-1)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return action + self.start if self.start else action


class GaussianHead(nn.Module):
    """``Box`` actions: diagonal Gaussian with a state-independent log-std.

    The sampled (unclipped) action is stored and scored; only the copy sent to the env is
    clipped to the space bounds, so log-probs stay those of the actual sample.
    """

    def __init__(self, in_features: int, space: spaces.Box, log_std_init: float) -> None:
        super().__init__()
        size = int(math.prod(space.shape))
        self.mean = layer_init(nn.Linear(in_features, size), std=0.01)
        self.log_std = nn.Parameter(torch.full((size,), float(log_std_init)))
        self.space_shape = space.shape
        self.low = space.low.reshape(-1)
        self.high = space.high.reshape(-1)
        self.dtype = space.dtype
        self.action_shape = (size,)
        self.action_dtype = torch.float32

    def forward(self, features: Tensor) -> Normal:
        mean = self.mean(features)
        return Normal(mean, self.log_std.expand_as(mean).exp(), validate_args=False)

    @staticmethod
    def log_prob(dist: Normal, action: Tensor) -> Tensor:
        return dist.log_prob(action).sum(-1)

    @staticmethod
    def entropy(dist: Normal) -> Tensor:
        return dist.entropy().sum(-1)

    @staticmethod
    def mode(dist: Normal) -> Tensor:
        return dist.mean

    def to_env(self, action: np.ndarray) -> np.ndarray:
        clipped = np.clip(action, self.low, self.high).astype(self.dtype, copy=False)
        return clipped.reshape(action.shape[:-1] + self.space_shape)


def make_head(in_features: int, space: spaces.Space, log_std_init: float) -> nn.Module:
    """Pick the action head for ``space``; unsupported spaces raise a clear error."""
    if isinstance(space, spaces.Discrete):
        return CategoricalHead(in_features, space)
    if isinstance(space, spaces.Box):
        if not np.all(np.isfinite(space.low)) or not np.all(np.isfinite(space.high)):
            raise UnsupportedSpaceError(
                f"action space {space} has infinite bounds: give it finite bounds "
                f"(e.g. gymnasium.wrappers.RescaleAction)"
            )
        return GaussianHead(in_features, space, log_std_init)
    raise UnsupportedSpaceError(
        f"action space {space} is not supported yet: use Discrete or Box actions"
    )
