"""Host-side staging for the rollout buffers, so the acting loop writes rows with NumPy.

Writing a row of a ``[T, B]`` tensor from an array (``buf[t] = torch.as_tensor(x)``) costs about
2 us, a NumPy row write about 0.15 us. What comes from the env (observations, rewards, episode ends,
previous actions) is therefore written into NumPy arrays and reaches the rollout's tensors at
no cost on CPU (they share memory) or in one copy per buffer per rollout on an accelerator
(from pinned memory, without blocking the host: see PyTorch's "A guide on good usage of
non_blocking and pin_memory()", https://pytorch.org/tutorials/intermediate/pinmem_nonblock.html).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from recurrl.policy.tree import tree_leaves, tree_map


def from_host(array: Any, device: torch.device, dtype: np.dtype | None = None) -> Tensor:
    """``torch.as_tensor(array, dtype, device)`` for a NumPy ``dtype``, a few times cheaper.

    The cast is NumPy's (the same rounding); on CPU the tensor shares the array's memory when
    no cast is needed, as with ``torch.as_tensor``.
    """
    tensor = torch.from_numpy(np.asarray(array, dtype=dtype))
    return tensor if device.type == "cpu" else tensor.to(device)


class HostBuffers:
    """Host arrays ``[T, B, ...]`` for the rollout buffers that come from the env.

    Args:
        buffers: the collector's buffers (``obs`` a tensor or :class:`TensorTree`,
            ``prev_actions``, ``prev_rewards``, ``episode_start``, ``valid``, ``rewards``,
            ``terminated``, ``truncated``), allocated outside inference mode.
        shared: write into the buffers' own memory (``Tensor.numpy()``); default: when they
            are on CPU. Otherwise the arrays are host tensors (pinned for CUDA) and
            :meth:`upload` copies them into the buffers.
    """

    def __init__(self, buffers: dict[str, Any], shared: bool | None = None) -> None:
        self._uploads: list[tuple[Tensor, Tensor]] = []
        self._shared = shared
        obs = tree_map(self._stage, buffers["obs"])
        self.obs_leaves: list[np.ndarray] = tree_leaves(obs)  # in tree_leaves order
        self.prev_actions = self._stage(buffers["prev_actions"])
        self.prev_rewards = self._stage(buffers["prev_rewards"])
        self.episode_start = self._stage(buffers["episode_start"])
        self.valid = self._stage(buffers["valid"])
        self.rewards = self._stage(buffers["rewards"])
        self.terminated = self._stage(buffers["terminated"])
        self.truncated = self._stage(buffers["truncated"])

    def _stage(self, buffer: Tensor) -> np.ndarray:
        shared = buffer.device.type == "cpu" if self._shared is None else self._shared
        if shared:
            return buffer.numpy()
        pinned = buffer.device.type == "cuda"
        host = torch.zeros(buffer.shape, dtype=buffer.dtype, pin_memory=pinned)
        self._uploads.append((buffer, host))
        return host.numpy()

    def write_inputs(self, t: int, obs, prev_action, prev_reward, episode_start, valid) -> None:
        """Row ``t`` of what the policy acts on, from host arrays (``obs`` as the env gives it:
        an array or a dict / tuple of them, or the arrays of a tensor / TensorTree)."""
        for rows, row in zip(self.obs_leaves, tree_leaves(obs), strict=True):
            rows[t] = row
        self.prev_actions[t] = prev_action
        self.prev_rewards[t] = prev_reward
        self.episode_start[t] = episode_start
        self.valid[t] = valid

    def upload(self) -> None:
        """Copy the host arrays into the buffers (nothing to do when shared).

        From pinned memory the copy does not block; the pinned allocator keeps the host memory
        until it is done, and later work on the buffers is ordered after it on the stream.
        """
        for buffer, host in self._uploads:
            buffer.copy_(host, non_blocking=host.is_pinned())
