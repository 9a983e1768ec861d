"""Observation encoders, chosen from the observation space.

An encoder maps raw observations ``[N, *obs_shape]`` (any leading batch shape flattened to N)
to features ``[N, out_features]``.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces
from torch import Tensor, nn

from recurrl.spaces import UnsupportedSpaceError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias (the PPO implementation-detail default)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_features: int, sizes: list[int], activation: str) -> tuple[nn.Module, int]:
    """A stack of Linear + activation layers; returns ``(module, out_features)``."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [layer_init(nn.Linear(in_features, size)), ACTIVATIONS[activation]()]
        in_features = size
    return nn.Sequential(*layers), in_features


class BoxEncoder(nn.Module):
    """Flattened ``Box`` vector -> MLP."""

    def __init__(self, space: spaces.Box, sizes: list[int], activation: str) -> None:
        super().__init__()
        self.obs_shape = space.shape
        self.net, self.out_features = mlp(int(math.prod(space.shape)), sizes, activation)

    def forward(self, obs: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.net(obs.to(dtype).flatten(1))  # (N, prod(obs_shape)) -> (N, F)


class DiscreteEncoder(nn.Module):
    """``Discrete`` -> one-hot (then the MLP, if any)."""

    def __init__(self, space: spaces.Discrete, sizes: list[int], activation: str) -> None:
        super().__init__()
        self.n = int(space.n)
        self.start = int(space.start)
        self.net, self.out_features = mlp(self.n, sizes, activation)

    def forward(self, obs: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        one_hot = nn.functional.one_hot(obs.long().flatten() - self.start, self.n)  # (N, n)
        return self.net(one_hot.to(dtype))


def make_encoder(space: spaces.Space, sizes: list[int], activation: str) -> nn.Module:
    """Pick the encoder for ``space``; unsupported spaces raise a clear error."""
    if isinstance(space, spaces.Box):
        return BoxEncoder(space, sizes, activation)
    if isinstance(space, spaces.Discrete):
        return DiscreteEncoder(space, sizes, activation)
    raise UnsupportedSpaceError(
        f"observation space {space} is not supported yet: use a Box or Discrete observation "
        f"(e.g. gymnasium.wrappers.FlattenObservation)"
    )
