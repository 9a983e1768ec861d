"""Running observation statistics, kept as buffers so checkpoints carry them."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor, nn

from recurrl.policy.tree import TensorTree, observation_leaves, space_leaves


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
        # Before any statistics the input passes through. Chosen with torch.where, not by
        # reading the count on the host: no device sync per step, and capturable in a CUDA graph.
        scale = (self.var + self.epsilon).sqrt()
        normalised = ((x.double() - self.mean) / scale).clamp(-self.clip, self.clip)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.where(self.count > 0, normalised, x.double()).to(dtype)


class TreeNormalizer(nn.Module):
    """Running normalisation of the ``Box`` vector parts of a ``Dict``/``Tuple`` observation.

    One :class:`RunningNormalizer` per normalised part, keyed by the part's index in
    :func:`~recurrl.policy.tree.space_leaves` order; other parts (images, discrete parts, the
    action mask) pass through.

    Args:
        space: the observation space.
        normalized: for every part of ``space`` (in ``space_leaves`` order), whether to normalise.
    """

    def __init__(self, space: spaces.Space, normalized: list[bool]) -> None:
        super().__init__()
        self.space = space
        leaves = space_leaves(space)
        self.normalizers = nn.ModuleDict(
            {
                str(i): RunningNormalizer(part.shape)
                for i, ((_, part), keep) in enumerate(zip(leaves, normalized, strict=True))
                if keep
            }
        )

    @torch.no_grad()
    def update(self, batch: TensorTree) -> None:
        """Fold ``batch`` (a tree of ``[N, *shape]`` parts) into the statistics."""
        leaves = observation_leaves(self.space, batch)
        for key, normalizer in self.normalizers.items():
            normalizer.update(leaves[int(key)])

    def forward(self, leaves: list[Tensor]) -> list[Tensor]:
        """Normalise the parts ``leaves`` (in ``space_leaves`` order); returns a new list."""
        leaves = list(leaves)
        for key, normalizer in self.normalizers.items():
            leaves[int(key)] = normalizer(leaves[int(key)])
        return leaves
