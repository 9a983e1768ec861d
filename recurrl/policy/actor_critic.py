"""Recurrent actor-critic: encoder -> core(s) -> action head and value head.

Built from the env's spaces. With ``shared_core`` the actor and critic read one core; otherwise
each has its own (the critic's state then never depends on the actor's gradients). The policy
state is a flat tuple of ``[num_layers, B, H]`` tensors: the actor core's, then the critic's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from recurrl.config import PolicyConfig
from recurrl.policy.cores import State, make_core
from recurrl.policy.encoders import layer_init, make_encoder, mlp
from recurrl.policy.heads import make_head
from recurrl.policy.normalize import RunningNormalizer


class StepOutput(NamedTuple):
    """One acting step for ``B`` envs."""

    action: Tensor  # [B, *action_shape], unclipped sample
    log_prob: Tensor  # [B]
    value: Tensor  # [B]
    state: State  # state after this step


class SequenceOutput(NamedTuple):
    """Scores of stored actions over ``[T, B]`` sequences (used by the PPO loss)."""

    log_prob: Tensor  # [T, B]
    entropy: Tensor  # [T, B]
    value: Tensor  # [T, B]
    state: State


class ActorCritic(nn.Module):
    """Recurrent actor-critic for a pair of Gymnasium spaces.

    Args:
        observation_space: the single-env observation space.
        action_space: the single-env action space.
        config: architecture (``policy.*`` config keys).
        normalize_obs: normalise ``Box`` observations by running statistics (``env.normalize_obs``).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: PolicyConfig | None = None,
        normalize_obs: bool = False,
    ) -> None:
        super().__init__()
        config = config or PolicyConfig()
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.obs_normalizer = None
        if normalize_obs and isinstance(observation_space, spaces.Box):
            self.obs_normalizer = RunningNormalizer(observation_space.shape)
        self.encoder = make_encoder(observation_space, config.encoder_sizes, config.activation)
        features = self.encoder.out_features

        def core() -> nn.Module:
            return make_core(
                config.core, features, config.hidden_size, config.num_layers, config.activation
            )

        self.actor_core = core()
        self.critic_core = None if config.shared_core else core()
        core_out = self.actor_core.out_features
        self.actor_mlp, actor_features = mlp(core_out, config.head_sizes, config.activation)
        self.critic_mlp, critic_features = mlp(core_out, config.head_sizes, config.activation)
        self.head = make_head(actor_features, action_space, config.log_std_init)
        self.value_head = layer_init(nn.Linear(critic_features, 1), std=1.0)
        self._num_actor_state = len(self.actor_core.initial_state(1))

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters (observations are cast to it)."""
        return self.value_head.weight.dtype

    # --- state ------------------------------------------------------------------------------

    def initial_state(self, batch_size: int) -> State:
        """Zero state for ``batch_size`` envs: a tuple of ``[num_layers, B, H]`` tensors."""
        device = self.value_head.weight.device
        state = tuple(self.actor_core.initial_state(batch_size))
        if self.critic_core is not None:
            state += tuple(self.critic_core.initial_state(batch_size))
        return tuple(s.to(device) for s in state)

    # --- sequence forward -------------------------------------------------------------------

    def _encode(self, obs: Tensor) -> Tensor:
        """``obs[T, B, ...] -> features[T, B, F]``."""
        T, B = obs.shape[:2]
        if self.obs_normalizer is not None:
            obs = self.obs_normalizer(obs)
        return self.encoder(obs.flatten(0, 1), self.dtype).view(T, B, -1)  # (T*B, F) -> (T, B, F)

    def forward(
        self, obs: Tensor, state: State, episode_start: Tensor
    ) -> tuple[Any, Tensor, State]:
        """Run ``obs[T, B, ...]``; returns ``(action distribution, value[T, B], state)``."""
        features = self._encode(obs)
        actor_state, critic_state = state[: self._num_actor_state], state[self._num_actor_state :]
        actor_out, actor_state = self.actor_core(features, actor_state, episode_start)
        if self.critic_core is None:
            critic_out = actor_out
        else:
            critic_out, critic_state = self.critic_core(features, critic_state, episode_start)
        value = self.value_head(self.critic_mlp(critic_out)).squeeze(-1)  # (T, B)
        return self.head(self.actor_mlp(actor_out)), value, tuple(actor_state) + tuple(critic_state)

    def evaluate_actions(
        self, obs: Tensor, action: Tensor, state: State, episode_start: Tensor
    ) -> SequenceOutput:
        """Log-prob and entropy of stored ``action[T, B, ...]`` and values, from ``state``."""
        dist, value, state = self(obs, state, episode_start)
        return SequenceOutput(
            self.head.log_prob(dist, action), self.head.entropy(dist), value, state
        )

    def step(
        self, obs: Tensor, state: State, episode_start: Tensor, deterministic: bool = False
    ) -> StepOutput:
        """One step for ``B`` envs: ``obs[B, ...]``, ``episode_start[B]``."""
        dist, value, state = self(obs.unsqueeze(0), state, episode_start.unsqueeze(0))
        action = self.head.mode(dist) if deterministic else dist.sample()
        return StepOutput(action[0], self.head.log_prob(dist, action)[0], value[0], state)

    def value(self, obs: Tensor, state: State, episode_start: Tensor) -> Tensor:
        """Values ``[B]`` of ``obs[B, ...]`` reached with ``state`` (bootstrapping)."""
        return self(obs.unsqueeze(0), state, episode_start.unsqueeze(0))[1][0]

    # --- user-facing acting -----------------------------------------------------------------

    @torch.inference_mode()
    def act(
        self,
        obs: Any,
        state: State | None = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, State]:
        """Choose actions in a plain Gymnasium loop.

        Accepts one observation (shape of the observation space) or a batch ``[B, ...]`` from
        a vector env. ``state=None`` starts from the initial state; ``episode_start`` (bool or
        ``[B]``) resets the state before this step (pass True on the first step of each
        episode). Returns the env-ready action (clipped to bounds for Box) and the new state.
        """
        obs_array = np.asarray(obs)
        single = obs_array.shape == tuple(self.observation_space.shape or ())
        if single:
            obs_array = obs_array[None]
        batch = obs_array.shape[0]
        device = self.value_head.weight.device
        obs_tensor = torch.as_tensor(obs_array, device=device)
        if state is None:
            state = self.initial_state(batch)
        if episode_start is None:
            episode_start = np.zeros(batch, dtype=bool)
        starts_array = np.zeros(batch, dtype=np.float32)
        starts_array[:] = np.asarray(episode_start, dtype=np.float32)  # bool or [B]
        starts = torch.as_tensor(starts_array, device=device)
        out = self.step(obs_tensor, state, starts, deterministic)
        action = self.head.to_env(out.action.cpu().numpy())
        return (action[0] if single else action), out.state
