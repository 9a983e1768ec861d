"""Running observation statistics, kept as buffers so checkpoints carry them."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningNormalizer(nn.Module):
    """Normalise by a running mean and variance (Chan et al.'s parallel update).

    Statistics change only through :meth:`update`, which the trainer calls once per rollout
    *after* the PPO update, so a rollout and the update that learns from it see the same
    normalisation (stored log-probs stay exact). Evaluation and ``act`` never update them.

    Args:
        shape: shape of one observation.
        clip: normalised values are clipped to ``[-clip, clip]``.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))
        self.clip = clip
        self.epsilon = epsilon

    @torch.no_grad()
    def update(self, batch: Tensor) -> None:
        """Fold ``batch[N, *shape]`` into the statistics."""
        batch = batch.double()
        batch_mean, batch_var, n = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.fill_(total)

    def forward(self, x: Tensor) -> Tensor:
        if self.count.item() == 0:
            return x
        scale = (self.var + self.epsilon).sqrt()
        normalised = (x.double() - self.mean) / scale
        return normalised.clamp(-self.clip, self.clip).to(
            x.dtype if x.is_floating_point() else torch.float32
        )
