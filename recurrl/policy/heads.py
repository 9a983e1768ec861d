"""Action heads: features -> action distribution, chosen from the action space.

Every head is a ``Linear`` (``head.linear``) followed by ``head.distribution(out, mask)``, and has
the same methods: ``head(features, mask=None) -> dist``, ``sample(dist)``,
``mode(dist)``, ``log_prob(dist, action)``, ``entropy(dist)`` (summed over action parts, so
``[...]`` for features ``[..., F]``) and ``to_env(action)``. A head stores and scores actions in
its own format (``action_shape``, ``action_dtype``); ``to_env`` turns a NumPy batch of them into
what the env expects.

============================  ===================================================================
action space                  distribution
============================  ===================================================================
``Discrete``                  categorical (``mask``: invalid actions get zero probability)
``MultiDiscrete``             a categorical per part (``mask``: the parts' masks concatenated)
``MultiBinary``               one independent Bernoulli per part
``Box``                       diagonal Gaussian, state-independent log-std; the env gets the sample
                              clipped to the bounds, or with ``policy.squash_actions`` squashed by
                              tanh and rescaled to the bounds (log-prob with the Jacobian)
============================  ===================================================================
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Bernoulli, Normal

from recurrl.policy.encoders import layer_init
from recurrl.policy.spaces import check_action_space


def _masked(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits with invalid entries (``mask`` False) pushed to a huge negative number.

    Their probability is exactly 0 (``exp`` underflows), yet everything stays finite, so
    entropies and gradients are never NaN. Half of the dtype's minimum keeps masked entries above
    the padding of :class:`MultiCategoricalHead`; a row with every entry masked is uniform.
    """
    if mask is None:
        return logits
    return logits.masked_fill(~mask.bool(), torch.finfo(logits.dtype).min / 2)


class Categorical:
    """``torch.distributions.Categorical(logits=...)`` without its per-call overhead.

    The same operations in the same order, so the same numbers bit for bit, the same random
    draws and the same gradients (``tests/test_policy.py`` holds them equal); torch's class
    spends ~20 us per acting step on argument and shape bookkeeping, about a tenth of a step.
    """

    __slots__ = ("logits", "_probs")

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # normalised log-probs
        self._probs: Tensor | None = None

    @property
    def probs(self) -> Tensor:
        if self._probs is None:
            self._probs = F.softmax(self.logits, dim=-1)
        return self._probs

    def sample(self) -> Tensor:
        probs_2d = self.probs.reshape(-1, self.logits.shape[-1])
        return torch.multinomial(probs_2d, 1, True).reshape(self.logits.shape[:-1])

    def log_prob(self, value: Tensor) -> Tensor:
        return self.logits.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        logits = torch.clamp(self.logits, min=torch.finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)


class CategoricalHead(nn.Module):
    """``Discrete`` actions: logits -> categorical. Actions are stored as int64 ``[...]``."""

    def __init__(self, in_features: int, space: spaces.Discrete) -> None:
        super().__init__()
        self.start = int(space.start)
        self.logits = layer_init(nn.Linear(in_features, int(space.n)), std=0.01)
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = torch.int64
        self.mask_size = int(space.n)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Categorical:
        return self.distribution(self.logits(features), mask)

    @property
    def linear(self) -> nn.Linear:
        return self.logits

    @staticmethod
    def distribution(logits: Tensor, mask: Tensor | None = None) -> Categorical:
        return Categorical(_masked(logits, mask))

    @staticmethod
    def sample(dist: Categorical) -> Tensor:
        return dist.sample()

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


class MultiCategoricalHead(nn.Module):
    """``MultiDiscrete`` actions: one categorical per part, all parts in one padded batch.

    The logits of part ``p`` (``nvec[p]`` of them) are laid out in row ``p`` of a
    ``[..., P, max(nvec)]`` tensor padded with the dtype's minimum, so one ``Categorical`` scores
    every part. Actions are stored as int64 ``[..., P]`` (``P = nvec.size``, flattened).
    """

    def __init__(self, in_features: int, space: spaces.MultiDiscrete) -> None:
        super().__init__()
        nvec = space.nvec.reshape(-1)
        self.logits = layer_init(nn.Linear(in_features, int(nvec.sum())), std=0.01)
        width, total = int(nvec.max()), int(nvec.sum())
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        index = np.full((len(nvec), width), total)  # ``total`` points at the padding column
        for part, (offset, n) in enumerate(zip(offsets, nvec, strict=True)):
            index[part, :n] = offset + np.arange(n)
        self.register_buffer("index", torch.as_tensor(index), persistent=False)
        self.start = space.start.reshape(-1)
        self.space_shape = space.shape
        self.dtype = space.dtype
        self.action_shape = (len(nvec),)
        self.action_dtype = torch.int64
        self.mask_size = total

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Categorical:
        return self.distribution(self.logits(features), mask)

    @property
    def linear(self) -> nn.Linear:
        return self.logits

    def distribution(self, logits: Tensor, mask: Tensor | None = None) -> Categorical:
        flat = _masked(logits, mask)  # (..., sum(nvec))
        padding = flat.new_full((*flat.shape[:-1], 1), torch.finfo(flat.dtype).min)
        padded = torch.cat([flat, padding], dim=-1)[..., self.index]  # (..., P, max(nvec))
        return Categorical(padded)

    @staticmethod
    def sample(dist: Categorical) -> Tensor:
        return dist.sample()

    @staticmethod
    def log_prob(dist: Categorical, action: Tensor) -> Tensor:
        return dist.log_prob(action).sum(-1)

    @staticmethod
    def entropy(dist: Categorical) -> Tensor:
        return dist.entropy().sum(-1)

    @staticmethod
    def mode(dist: Categorical) -> Tensor:
        return dist.logits.argmax(-1)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        env_action = (action + self.start).astype(self.dtype, copy=False)
        return env_action.reshape(action.shape[:-1] + self.space_shape)


class BernoulliHead(nn.Module):
    """``MultiBinary`` actions: one Bernoulli per part. Stored as floats ``[..., n]`` (0 or 1)."""

    def __init__(self, in_features: int, space: spaces.MultiBinary) -> None:
        super().__init__()
        size = int(math.prod(space.shape))
        self.logits = layer_init(nn.Linear(in_features, size), std=0.01)
        self.space_shape = space.shape
        self.action_shape = (size,)
        self.action_dtype = torch.float32

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Bernoulli:
        return self.distribution(self.logits(features), mask)

    @property
    def linear(self) -> nn.Linear:
        return self.logits

    @staticmethod
    def distribution(logits: Tensor, mask: Tensor | None = None) -> Bernoulli:
        return Bernoulli(logits=logits, validate_args=False)

    @staticmethod
    def sample(dist: Bernoulli) -> Tensor:
        return dist.sample()

    @staticmethod
    def log_prob(dist: Bernoulli, action: Tensor) -> Tensor:
        return dist.log_prob(action.to(dist.logits.dtype)).sum(-1)

    @staticmethod
    def entropy(dist: Bernoulli) -> Tensor:
        return dist.entropy().sum(-1)

    @staticmethod
    def mode(dist: Bernoulli) -> Tensor:
        return (dist.logits > 0).to(dist.logits.dtype)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return action.astype(np.int8).reshape(action.shape[:-1] + self.space_shape)


class GaussianHead(nn.Module):
    """``Box`` actions: diagonal Gaussian with a state-independent log-std.

    The Gaussian sample ``u`` is stored and scored, so log-probs are those of the actual sample.
    Unsquashed, only the copy sent to the env is clipped to the bounds. With ``squash`` the env
    gets ``low + (tanh(u) + 1) * (high - low) / 2`` and ``log_prob`` is the density of that
    action: ``log N(u) - sum log(1 - tanh(u)^2) - sum log((high - low) / 2)`` (the Jacobians of
    tanh and of the rescaling). The entropy of a squashed action has no closed form;
    ``entropy`` is then that of the Gaussian before squashing (the bonus PPO needs).
    """

    def __init__(
        self, in_features: int, space: spaces.Box, log_std_init: float, squash: bool = False
    ) -> None:
        super().__init__()
        size = int(math.prod(space.shape))
        self.mean = layer_init(nn.Linear(in_features, size), std=0.01)
        self.log_std = nn.Parameter(torch.full((size,), float(log_std_init)))
        self.space_shape = space.shape
        self.low = space.low.reshape(-1).astype(np.float64)
        self.high = space.high.reshape(-1).astype(np.float64)
        self.squash = squash
        self.log_half_range = float(np.log((self.high - self.low) / 2.0).sum()) if squash else 0.0
        self.dtype = space.dtype
        self.action_shape = (size,)
        self.action_dtype = torch.float32

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Normal:
        return self.distribution(self.mean(features), mask)

    @property
    def linear(self) -> nn.Linear:
        return self.mean

    def distribution(self, mean: Tensor, mask: Tensor | None = None) -> Normal:
        return Normal(mean, self.log_std.expand_as(mean).exp(), validate_args=False)

    @staticmethod
    def sample(dist: Normal) -> Tensor:
        return dist.sample()

    def log_prob(self, dist: Normal, action: Tensor) -> Tensor:
        log_prob = dist.log_prob(action).sum(-1)
        if not self.squash:
            return log_prob
        # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), stable for large |u|.
        log_jacobian = 2.0 * (math.log(2.0) - action - F.softplus(-2.0 * action))
        return log_prob - log_jacobian.sum(-1) - self.log_half_range

    @staticmethod
    def entropy(dist: Normal) -> Tensor:
        return dist.entropy().sum(-1)

    @staticmethod
    def mode(dist: Normal) -> Tensor:
        return dist.mean

    def to_env(self, action: np.ndarray) -> np.ndarray:
        action = action.astype(np.float64)
        if self.squash:
            action = self.low + (np.tanh(action) + 1.0) * (self.high - self.low) / 2.0
        clipped = np.clip(action, self.low, self.high).astype(self.dtype, copy=False)
        return clipped.reshape(action.shape[:-1] + self.space_shape)


def make_head(
    in_features: int, space: spaces.Space, log_std_init: float, squash: bool = False
) -> nn.Module:
    """Pick the action head for ``space``; unsupported spaces raise a clear error."""
    check_action_space(space)
    if isinstance(space, spaces.Discrete):
        return CategoricalHead(in_features, space)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiCategoricalHead(in_features, space)
    if isinstance(space, spaces.MultiBinary):
        return BernoulliHead(in_features, space)
    return GaussianHead(in_features, space, log_std_init, squash)
