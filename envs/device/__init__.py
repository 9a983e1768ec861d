"""Device-resident vector envs: the natively batched envs as torch tensor ops on any device.

``make_torch_vector_env(env_id, num_envs, device)`` builds ``N`` copies of a ``recurrl/*`` env
whose tensors live on ``device`` (the policy's: CUDA in production), so a rollout never leaves
it. Same spaces, seeding, episodes and ``get_state`` as the numpy vector env of the id; steps
take and return tensors and always return a dense ``info["final_obs"]`` / ``info["_final_obs"]``
(see :mod:`envs.device.core`). ``recurrl`` uses them with ``env.vectorization: torch``.

Torch, numpy and gymnasium only: never imports ``recurrl``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from .. import ENVIRONMENTS  # noqa: F401  (registers the recurrl/* ids)
from .bandit import BanditTorchVectorEnv
from .cartpole import CartPoleNoVelocityTorchVectorEnv
from .core import TorchTaskVectorEnv
from .cue_recall import CueRecallTorchVectorEnv
from .memory_grid import MemoryGridTorchVectorEnv
from .point_recall import PointRecallTorchVectorEnv
from .repeat_previous import RepeatPreviousTorchVectorEnv
from .sequence_recall import SequenceRecallTorchVectorEnv
from .tmaze import TMazeTorchVectorEnv

TORCH_VECTOR_ENVS: dict[str, type[gym.vector.VectorEnv]] = {
    "recurrl/TMaze-v0": TMazeTorchVectorEnv,
    "recurrl/RepeatPrevious-v0": RepeatPreviousTorchVectorEnv,
    "recurrl/CartPoleNoVelocity-v0": CartPoleNoVelocityTorchVectorEnv,
    "recurrl/CueRecall-v0": CueRecallTorchVectorEnv,
    "recurrl/SequenceRecall-v0": SequenceRecallTorchVectorEnv,
    "recurrl/MemoryGrid-v0": MemoryGridTorchVectorEnv,
    "recurrl/Bandit-v0": BanditTorchVectorEnv,
    "recurrl/PointRecall-v0": PointRecallTorchVectorEnv,
}
"""Gym id -> its device-resident vector env class."""


def make_torch_vector_env(
    env_id: str, num_envs: int, device: str | torch.device = "cpu", **kwargs: Any
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` on ``device``; ``kwargs`` go to the constructor.

    The id's registered ``max_episode_steps`` applies unless ``max_episode_steps=`` is given,
    as ``gymnasium.make_vec`` does for the numpy vector env.

    Raises:
        KeyError: ``env_id`` has no torch implementation (the message lists those that do).
    """
    if env_id not in TORCH_VECTOR_ENVS:
        raise KeyError(
            f"{env_id} has no torch implementation; these do: {', '.join(TORCH_VECTOR_ENVS)}"
        )
    if "max_episode_steps" not in kwargs:
        kwargs["max_episode_steps"] = gym.spec(env_id).max_episode_steps
    return TORCH_VECTOR_ENVS[env_id](num_envs=num_envs, device=device, **kwargs)


__all__ = [
    "TORCH_VECTOR_ENVS",
    "BanditTorchVectorEnv",
    "CartPoleNoVelocityTorchVectorEnv",
    "CueRecallTorchVectorEnv",
    "MemoryGridTorchVectorEnv",
    "PointRecallTorchVectorEnv",
    "RepeatPreviousTorchVectorEnv",
    "SequenceRecallTorchVectorEnv",
    "TMazeTorchVectorEnv",
    "TorchTaskVectorEnv",
    "make_torch_vector_env",
]
