"""Recurrent actor-critic: encoder -> core(s) -> action head and value head.

Built from the env's spaces. Observations may be any supported space, nested ``Dict``/``Tuple``
included (a :class:`~recurrl.policy.tree.TensorTree` inside recurrl); a top-level ``Dict`` key
``action_mask`` masks discrete actions. With ``shared_core`` the actor and critic read one core;
otherwise each has its own (the critic's state then never depends on the actor's gradients). The
policy state is a flat tuple of 3-d tensors with the batch in dim 1 (``[num_layers, B, H]``
for the recurrent cores, the windows of :mod:`recurrl.policy.cores` for the others): the actor
core's, then the critic's. With ``prev_action`` / ``prev_reward`` the cores also read the
previous action and reward (see :mod:`recurrl.policy.inputs`); every method then takes them as
``prev_action`` / ``prev_reward``, shaped like the observations' leading dimensions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from recurrl.config import PolicyConfig
from recurrl.nn.native import frozen_weights
from recurrl.policy.cores import State, make_core
from recurrl.policy.encoders import ObservationEncoder, layer_init, mlp, mlp_input_widths
from recurrl.policy.heads import make_head
from recurrl.policy.inputs import PreviousInputs, null_action
from recurrl.policy.normalize import RunningNormalizer, TreeNormalizer
from recurrl.policy.spaces import (
    ACTION_MASK_KEY,
    UnsupportedSpaceError,
    check_action_space,
    check_observation_space,
    image_layout,
)
from recurrl.policy.tree import (
    Observation,
    as_observation,
    observation_leaves,
    space_leaves,
    tree_map,
)


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


def _has_action_mask(observation_space: spaces.Space, action_space: spaces.Space) -> bool:
    """Whether observations carry ``action_mask``; refuses masks that cannot fit the actions."""
    if not (
        isinstance(observation_space, spaces.Dict) and ACTION_MASK_KEY in observation_space.spaces
    ):
        return False
    mask_space = observation_space.spaces[ACTION_MASK_KEY]
    if isinstance(action_space, spaces.Discrete):
        expected = int(action_space.n)
    elif isinstance(action_space, spaces.MultiDiscrete):
        expected = int(action_space.nvec.sum())
    else:
        raise UnsupportedSpaceError(
            f"observation space['{ACTION_MASK_KEY}'] masks discrete actions, but the action space "
            f"is {action_space}: rename the key or use Discrete / MultiDiscrete actions"
        )
    size = int(np.prod(mask_space.shape)) if mask_space.shape is not None else -1
    if not isinstance(mask_space, spaces.Box | spaces.MultiBinary) or size != expected:
        raise UnsupportedSpaceError(
            f"observation space['{ACTION_MASK_KEY}'] is {mask_space}: expected a MultiBinary or "
            f"0/1 Box with {expected} entries (one per action of {action_space})"
        )
    return True


def _make_normalizer(space: spaces.Space, normalize: bool) -> nn.Module | None:
    """Running statistics for the ``Box`` vector parts (not images, not the action mask)."""
    if not normalize:
        return None
    if isinstance(space, spaces.Box):
        return RunningNormalizer(space.shape) if image_layout(space) is None else None
    normalized = [
        isinstance(part, spaces.Box) and image_layout(part) is None and path != (ACTION_MASK_KEY,)
        for path, part in space_leaves(space)
    ]
    return TreeNormalizer(space, normalized) if any(normalized) else None


WIDE_OBSERVATION = 128  # features of one MLP-encoded observation part beyond which auto widens


def resolve_sizes(config: PolicyConfig, observation_space: spaces.Space) -> PolicyConfig:
    """``config`` with ``encoder_sizes`` / ``hidden_size`` ``auto`` replaced by numbers.

    ``[64]`` / 128, or ``[256]`` / 256 when an observation part that an MLP encodes (flattened
    or one-hot, not behind a CNN) has more than :data:`WIDE_OBSERVATION` features. Measured
    (docs/defaults.md, round 7): POPGym's Concentration, a 156-wide one-hot board, scores -0.38 /
    -0.51 at 200k steps with the wide network against -0.75 / -0.70 with 64 / 128, while a wide
    encoder on the T-maze's 3 features stops exploring before the cue is used (0.00 / 0.00).
    """
    if config.encoder_sizes != "auto" and config.hidden_size != "auto":
        return config
    check_observation_space(observation_space)
    widths = mlp_input_widths(observation_space, config.encoder)
    wide = max(widths, default=0) > WIDE_OBSERVATION
    changes: dict[str, Any] = {}
    if config.encoder_sizes == "auto":
        changes["encoder_sizes"] = [256] if wide else [64]
    if config.hidden_size == "auto":
        changes["hidden_size"] = 256 if wide else 128
    return dataclasses.replace(config, **changes)


class ActorCritic(nn.Module):
    """Recurrent actor-critic for a pair of Gymnasium spaces.

    Args:
        observation_space: the single-env observation space.
        action_space: the single-env action space.
        config: architecture (``policy.*`` config keys).
        normalize_obs: normalise ``Box`` observations (and ``Box`` parts of ``Dict``/``Tuple``
            ones, images excepted) by running statistics (``env.normalize_obs``).

    Raises:
        UnsupportedSpaceError: a space no encoder or head handles (the message says which).
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
        if config.prev_action == "auto":  # only a run knows its env (recurrl.run.train): none here
            config = dataclasses.replace(config, prev_action=False)
        check_observation_space(observation_space)
        check_action_space(action_space)
        config = resolve_sizes(config, observation_space)
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.has_action_mask = _has_action_mask(observation_space, action_space)
        self.obs_normalizer = _make_normalizer(observation_space, normalize_obs)
        self.encoder = ObservationEncoder(
            observation_space, config.encoder_sizes, config.activation, config.encoder
        )
        self.previous = None
        if config.prev_action or config.prev_reward:
            self.previous = PreviousInputs(action_space, config.prev_action, config.prev_reward)
        features = self.encoder.out_features + (self.previous.out_features if self.previous else 0)
        if features == 0:
            raise UnsupportedSpaceError(
                f"observation space {observation_space} has nothing to encode besides "
                f"'{ACTION_MASK_KEY}'"
            )

        def core() -> nn.Module:
            return make_core(
                config.core,
                features,
                config.hidden_size,
                config.num_layers,
                config.activation,
                config.layer_norm,
                config.learned_initial_state,
                config.forget_bias,
                config.context,
            )

        self.actor_core = core()
        self.critic_core = None if config.shared_core else core()
        core_out = self.actor_core.out_features
        self.actor_mlp, actor_features = mlp(core_out, config.head_sizes, config.activation)
        self.critic_mlp, critic_features = mlp(core_out, config.head_sizes, config.activation)
        self.head = make_head(
            actor_features, action_space, config.log_std_init, config.squash_actions
        )
        self.value_head = layer_init(nn.Linear(critic_features, 1), std=1.0)
        self._num_actor_state = len(self.actor_core.initial_state(1))

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters (observations are cast to it)."""
        return self.value_head.weight.dtype

    @property
    def uses_previous(self) -> bool:
        """Whether the cores read the previous action and/or reward."""
        return self.previous is not None

    @torch.no_grad()
    def update_reward_statistics(self, rewards: Tensor) -> None:
        """Fold raw env rewards ``[N]`` into the previous-reward input's running statistics.

        A no-op unless ``policy.prev_reward``. Call between rollouts (the collector does, at the
        start of each rollout), never between a rollout and its update.
        """
        normalizer = self.previous.reward_normalizer if self.previous is not None else None
        if normalizer is not None and rewards.numel() > 0:
            normalizer.update(rewards.reshape(-1))

    # --- state ------------------------------------------------------------------------------

    def initial_state(self, batch_size: int) -> State:
        """Initial state for ``batch_size`` envs: a tuple of 3-d tensors, batch in dim 1
        (``[num_layers, B, H]`` for the recurrent cores).

        Zeros (an empty window for the transformer and TCN), or the learned initial state with
        ``policy.learned_initial_state``.
        """
        device = self.value_head.weight.device
        state = tuple(self.actor_core.initial_state(batch_size))
        if self.critic_core is not None:
            state += tuple(self.critic_core.initial_state(batch_size))
        return tuple(s.to(device) for s in state)

    # --- sequence forward -------------------------------------------------------------------

    def _encode(
        self,
        obs: Observation,
        episode_start: Tensor,
        prev_action: Tensor | None,
        prev_reward: Tensor | None,
    ) -> Tensor:
        """``obs[T, B, ...]`` (+ previous action and reward) ``-> features[T, B, F]``."""
        T, B = episode_start.shape
        leaves = observation_leaves(self.observation_space, obs)
        if isinstance(self.obs_normalizer, RunningNormalizer):
            leaves = [self.obs_normalizer(leaves[0])]
        elif self.obs_normalizer is not None:
            leaves = self.obs_normalizer(leaves)
        flat = [x.flatten(0, 1) for x in leaves]  # each (T*B, ...)
        parts = []
        if self.encoder.out_features:
            parts.append(self.encoder(flat, self.dtype).view(T, B, -1))  # (T, B, F_obs)
        if self.previous is not None:
            parts.append(self.previous(prev_action, prev_reward, episode_start, self.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (T, B, F)

    def _action_mask(self, obs: Observation) -> Tensor | None:
        if not self.has_action_mask:
            return None
        mask = obs.data[ACTION_MASK_KEY]
        return mask.reshape(*mask.shape[:2], -1)  # (T, B, n)

    def forward(
        self,
        obs: Observation,
        state: State,
        episode_start: Tensor,
        prev_action: Tensor | None = None,
        prev_reward: Tensor | None = None,
    ) -> tuple[Any, Tensor, State]:
        """Run ``obs[T, B, ...]``; returns ``(action distribution, value[T, B], state)``."""
        features = self._encode(obs, episode_start, prev_action, prev_reward)
        return self._cores_and_heads(features, state, episode_start, self._action_mask(obs))

    def _cores_and_heads(
        self,
        features: Tensor,
        state: State,
        episode_start: Tensor,
        mask: Tensor | None,
        one_step: bool = False,
    ) -> tuple[Any, Tensor, State]:
        """``features[T, B, F]`` (``[B, F]`` with ``one_step``: the cores' ``step``) ->
        ``(action distribution, value, state)``."""
        actor_state, critic_state = state[: self._num_actor_state], state[self._num_actor_state :]
        actor, critic = self.actor_core, self.critic_core
        if one_step:
            actor, critic = actor.step, None if critic is None else critic.step
        actor_out, actor_state = actor(features, actor_state, episode_start)
        if critic is None:
            critic_out = actor_out
        else:
            critic_out, critic_state = critic(features, critic_state, episode_start)
        value = self.value_head(self.critic_mlp(critic_out)).squeeze(-1)  # (T, B)
        dist = self.head.distribution(self.head.linear(self.actor_mlp(actor_out)), mask)
        return dist, value, tuple(actor_state) + tuple(critic_state)

    def _step(
        self,
        obs: Observation,
        state: State,
        episode_start: Tensor,
        prev_action: Tensor | None,
        prev_reward: Tensor | None,
    ) -> tuple[Any, Tensor, State]:
        """:meth:`forward` for one step, ``obs[B, ...]``: the same numbers (tested), through the
        cores' one-step path."""
        obs = _unsqueeze(obs)
        previous = (_unsqueeze(prev_action), _unsqueeze(prev_reward))
        features = self._encode(obs, episode_start.unsqueeze(0), *previous)[0]  # (B, F)
        mask = self._action_mask(obs)
        mask = None if mask is None else mask[0]
        return self._cores_and_heads(features, state, episode_start, mask, one_step=True)

    @contextmanager
    def acting(self) -> Iterator[None]:
        """A block in which the weights do not change (acting, evaluating, replaying states):
        no gradients are recorded, and what the cores derive from the weights (transposed
        recurrent weights, summed biases) is computed once for the block, not once per call.
        Update the weights only outside it."""
        with torch.inference_mode(), frozen_weights():
            yield

    def evaluate_actions(
        self,
        obs: Observation,
        action: Tensor,
        state: State,
        episode_start: Tensor,
        prev_action: Tensor | None = None,
        prev_reward: Tensor | None = None,
    ) -> SequenceOutput:
        """Log-prob and entropy of stored ``action[T, B, ...]`` and values, from ``state``."""
        dist, value, state = self(obs, state, episode_start, prev_action, prev_reward)
        return SequenceOutput(
            self.head.log_prob(dist, action), self.head.entropy(dist), value, state
        )

    def step(
        self,
        obs: Observation,
        state: State,
        episode_start: Tensor,
        deterministic: bool = False,
        prev_action: Tensor | None = None,
        prev_reward: Tensor | None = None,
    ) -> StepOutput:
        """One step for ``B`` envs: ``obs[B, ...]``, ``episode_start[B]``."""
        dist, value, state = self._step(obs, state, episode_start, prev_action, prev_reward)
        action = self.head.mode(dist) if deterministic else self.head.sample(dist)
        return StepOutput(action, self.head.log_prob(dist, action), value, state)

    def value(
        self,
        obs: Observation,
        state: State,
        episode_start: Tensor,
        prev_action: Tensor | None = None,
        prev_reward: Tensor | None = None,
    ) -> Tensor:
        """Values ``[B]`` of ``obs[B, ...]`` reached with ``state`` (bootstrapping)."""
        return self._step(obs, state, episode_start, prev_action, prev_reward)[1]

    # --- user-facing acting -----------------------------------------------------------------

    @torch.inference_mode()
    def act(
        self,
        obs: Any,
        state: State | None = None,
        episode_start: Any = None,
        deterministic: bool = False,
        prev_action: Any = None,
        prev_reward: Any = None,
    ) -> tuple[np.ndarray, State]:
        """Choose actions in a plain Gymnasium loop.

        Accepts one observation (as the env returns it: an array, or a dict / tuple for
        ``Dict``/``Tuple`` spaces) or a batch ``[B, ...]`` from a vector env. ``state=None``
        starts from the initial state; ``episode_start`` (bool or ``[B]``) resets the state
        before this step (pass True on the first step of each episode). A policy trained with
        ``policy.prev_action`` / ``policy.prev_reward`` also needs the action last sent to the
        env and the reward it returned (``prev_action``, ``prev_reward``; ignored, and may be
        None, where ``episode_start`` is set). Returns the env-ready action (clipped or squashed
        to the bounds for Box) and the new state.
        """
        single = _is_single(self.observation_space, obs)
        obs_tensor = _batched(obs, single, self.value_head.weight.device)
        batch = observation_leaves(self.observation_space, obs_tensor)[0].shape[0]
        device = obs_tensor.device
        if state is None:
            state = self.initial_state(batch)
        starts_array = np.zeros(batch, dtype=np.float32)
        if episode_start is not None:
            starts_array[:] = np.asarray(episode_start, dtype=np.float32)  # bool or [B]
        starts = torch.as_tensor(starts_array, device=device)
        previous = self._previous_inputs(prev_action, prev_reward, starts_array, single, device)
        out = self.step(obs_tensor, state, starts, deterministic, *previous)
        action = self.head.to_env(out.action.cpu().numpy())
        return (action[0] if single else action), out.state

    def _previous_inputs(
        self,
        prev_action: Any,
        prev_reward: Any,
        starts: np.ndarray,
        single: bool,
        device: torch.device,
    ) -> tuple[Tensor | None, Tensor | None]:
        """``act``'s previous action / reward as ``[B, ...]`` tensors (placeholders at starts)."""
        if self.previous is None:
            return None, None
        if not starts.all() and (
            (self.config.prev_action and prev_action is None)
            or (self.config.prev_reward and prev_reward is None)
        ):
            raise ValueError(
                "this policy reads the previous action and/or reward (policy.prev_action, "
                "policy.prev_reward): pass act(..., prev_action=action, prev_reward=reward) "
                "from the last env.step, except on an episode's first step"
            )
        batch = len(starts)
        if prev_action is None:
            prev_action = null_action(self.action_space, batch)
        elif single:
            prev_action = np.asarray(prev_action)[None]
        rewards = np.zeros(batch) if prev_reward is None else np.asarray(prev_reward, np.float64)
        return (
            torch.as_tensor(np.asarray(prev_action), device=device),
            torch.as_tensor(np.broadcast_to(rewards, (batch,)).copy(), device=device),
        )


def _unsqueeze(x: Observation | Tensor | None) -> Any:
    """Add the time axis: ``[B, ...] -> [1, B, ...]`` (tensors and trees; None stays None)."""
    if x is None:
        return None
    return x.map(lambda leaf: leaf.unsqueeze(0)) if not isinstance(x, Tensor) else x.unsqueeze(0)


def _is_single(space: spaces.Space, obs: Any) -> bool:
    """Whether ``obs`` is one observation (its first part has the space's shape), not a batch."""
    first = np.asarray(observation_leaves(space, obs)[0])
    return first.shape == tuple(space_leaves(space)[0][1].shape or ())


def _batched(obs: Any, single: bool, device: torch.device) -> Observation:
    """Env observation(s) -> tensors ``[B, ...]`` on ``device`` (a batch of one if ``single``)."""
    if single:
        obs = tree_map(lambda x: np.asarray(x)[None], obs)
    return as_observation(obs, device)
