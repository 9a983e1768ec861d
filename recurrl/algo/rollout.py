"""Rollout collection (advantages and reward scaling: :mod:`recurrl.algo.returns`; the host
arrays the loop writes what the env returns into: :mod:`recurrl.algo.host_buffers`).

:class:`Collector` steps a Gymnasium ``VectorEnv`` with the policy for ``T`` steps, carrying the
recurrent state across steps and rollouts, and returns a :class:`Rollout` of ``[T, B]`` tensors
plus the (detached) state at every chunk start ``0, L, 2L, ...``.

Autoreset, both Gymnasium modes:

- ``SAME_STEP``: the observation returned at a done step is already the next episode's first;
  ``info["final_obs"]`` holds the last one. A truncated step bootstraps from the value of that
  final observation, computed with the state it was reached with. Every step trains.
- ``NEXT_STEP``: the step after a done step only resets the env (its action is ignored, its
  reward is 0). That step is kept in the buffer with ``valid = 0`` (never trains); the policy
  processes the final observation with the episode's state still live, so its value is exactly
  the truncation bootstrap; the state resets on the step after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from recurrl.algo.distributed import SINGLE, World
from recurrl.algo.env_checks import GuardedEnvs, final_observations
from recurrl.algo.host_buffers import HostBuffers, from_host
from recurrl.algo.make_env import autoreset_is_next_step
from recurrl.algo.returns import RewardScaler, generalized_advantage_estimate
from recurrl.policy import ActorCritic
from recurrl.policy.cores import State
from recurrl.policy.inputs import null_action
from recurrl.policy.tree import (
    Observation,
    TensorTree,
    as_observation,
    tree_leaves,
    tree_map,
)


@dataclass
class Rollout:
    """``T`` steps of ``B`` envs; all tensors time-major ``[T, B, ...]`` on the policy's device.

    ``obs`` is a :class:`~recurrl.policy.tree.TensorTree` for ``Dict``/``Tuple`` observations.
    ``prev_actions[t]`` / ``prev_rewards[t]`` are the env action and raw reward of step ``t - 1``
    (the policy zeroes them where ``episode_start`` is set).
    """

    obs: Observation
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    episode_start: Tensor
    valid: Tensor  # 0 for NEXT_STEP reset-only steps
    next_values: Tensor
    chunk_states: State  # each [K, num_layers, B, H]: state before steps 0, L, 2L, ...
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    prev_actions: Tensor | None = None
    prev_rewards: Tensor | None = None
    nonfinite_steps: int = 0  # transitions masked out for NaN / inf (``env.skip_nonfinite``)

    def advantages(self, gamma: float, gae_lambda: float) -> tuple[Tensor, Tensor]:
        """GAE over this rollout: ``(advantages, returns)``, each ``[T, B]``."""
        return generalized_advantage_estimate(
            self.rewards,
            self.values,
            self.next_values,
            self.terminated,
            self.truncated,
            gamma,
            gae_lambda,
        )


class Collector:
    """Collects rollouts from ``envs`` with ``policy``, keeping state between calls.

    Args:
        envs: a Gymnasium ``VectorEnv`` (NEXT_STEP or SAME_STEP autoreset; any other mode is
            refused with a ConfigError, see ``recurrl.algo.make_env.autoreset_is_next_step``).
        policy: the actor-critic (its device is used for every tensor).
        rollout_len: ``T``; bptt_len: ``L`` (divides T).
        seed: seed for the first ``envs.reset``.
        reward_scaler: optional :class:`RewardScaler` applied to stored rewards.
        env_id: the env's name in error messages (default: the vector env's spec id).
        skip_nonfinite: mask out transitions with NaN / inf rewards or observations and reset
            that env (see :meth:`_skip_nonfinite`) instead of raising
            :class:`~recurrl.errors.NonFiniteError`.
        world: the ranks of a data-parallel run; the policy's previous-reward statistics are
            merged over them (``recurrl.algo.distributed.World.synced_statistics``).

    An env that raises while stepping is reported as :class:`~recurrl.errors.EnvStepError`
    naming the env, the copy (when knowable) and the step.
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        policy: ActorCritic,
        rollout_len: int,
        bptt_len: int,
        seed: int | None = None,
        reward_scaler: RewardScaler | None = None,
        env_id: str | None = None,
        skip_nonfinite: bool = False,
        world: World = SINGLE,
    ) -> None:
        self.envs = envs
        self.world = world
        self.start_step = 0  # the run's global step where this rollout starts (messages only)
        self.reward_scaler = reward_scaler
        self.policy = policy
        self.rollout_len = rollout_len
        self.bptt_len = bptt_len
        self.num_envs = envs.num_envs
        self.device = next(policy.parameters()).device
        name = env_id or getattr(getattr(envs, "spec", None), "id", type(envs).__name__)
        self.next_step_autoreset = autoreset_is_next_step(envs, name)
        self.guard = GuardedEnvs(envs, name, skip_nonfinite, not self.next_step_autoreset)
        obs, _ = envs.reset(seed=seed)
        self.obs = as_observation(obs, self.device)
        self.episode_start = torch.ones(self.num_envs, device=self.device, dtype=policy.dtype)
        # Env action and raw reward of the last step (core inputs with policy.prev_*).
        action = null_action(policy.action_space, self.num_envs)
        self.prev_action = torch.as_tensor(action, device=self.device)
        self.prev_reward = torch.zeros(self.num_envs, device=self.device, dtype=policy.dtype)
        self.unseen_rewards: list[np.ndarray] = []  # raw rewards not yet in the policy's stats
        self.pending_reset = np.zeros(self.num_envs, dtype=bool)
        self.state = policy.initial_state(self.num_envs)
        self.running_return = np.zeros(self.num_envs, dtype=np.float64)
        self.running_length = np.zeros(self.num_envs, dtype=np.int64)

    def _buffers(self) -> dict[str, Tensor]:
        T, B, dev = self.rollout_len, self.num_envs, self.device
        head = self.policy.head

        def zeros(*shape, dtype=self.policy.dtype) -> Tensor:
            return torch.zeros(T, B, *shape, dtype=dtype, device=dev)

        def like(x: Tensor) -> Tensor:
            return torch.zeros(T, *x.shape, dtype=x.dtype, device=dev)  # (T, B, ...)

        return {
            "obs": tree_map(like, self.obs),
            "prev_actions": like(self.prev_action),
            "prev_rewards": zeros(),
            "actions": zeros(*head.action_shape, dtype=head.action_dtype),
            **{k: zeros() for k in ("log_probs", "values", "rewards", "terminated")},
            **{k: zeros() for k in ("truncated", "episode_start", "valid", "bootstrap")},
        }

    def collect(self, global_step: int = 0) -> Rollout:
        """Step every env ``T`` times; return the rollout with bootstrap values filled in.

        The buffers are allocated outside inference mode (so the update may use them in autograd)
        and filled inside it: what comes from the env through :class:`HostBuffers`, the policy's
        outputs stacked once at the end. The previous rollout's raw rewards are folded into the
        policy's previous-reward statistics first (after its update, before this rollout acts).

        Args:
            global_step: the run's step count so far; error messages place a failing step by it.
        """
        self.start_step = global_step
        with self.world.synced_statistics(self.policy):
            self.fold_rewards()
        buf = self._buffers()
        host = HostBuffers(buf)
        with self.policy.acting():  # no update while acting
            rollout = self._fill(buf, host)
        rollout.chunk_states = tuple(s.clone() for s in rollout.chunk_states)  # normal tensors
        return rollout

    def fold_rewards(self) -> None:
        """Fold the last rollout's raw rewards into the policy's previous-reward statistics
        (:meth:`collect` does it first, merged over the ranks)."""
        if self.unseen_rewards:
            rewards = np.concatenate(self.unseen_rewards)
            self.policy.update_reward_statistics(torch.as_tensor(rewards, device=self.device))
            self.unseen_rewards = []

    def _fill(self, buf: dict[str, Tensor], host: HostBuffers) -> Rollout:
        T, L = self.rollout_len, self.bptt_len
        dtype = host.episode_start.dtype  # the policy's float dtype, as NumPy's
        head = self.policy.head
        chunk_states: list[State] = []
        actions, log_probs, values = [], [], []
        raw_rewards = np.zeros((T, self.num_envs))  # (T, B) for the previous-reward statistics
        returns: list[float] = []
        lengths: list[int] = []
        skipped = 0
        inputs = self._host_inputs()
        for t in range(T):
            if t % L == 0:
                chunk_states.append(self.state)
            valid = ~self.pending_reset
            host.write_inputs(t, *inputs, valid)
            previous = (self.prev_action, self.prev_reward)
            out = self.policy.step(self.obs, self.state, self.episode_start, False, *previous)
            actions.append(out.action)
            log_probs.append(out.log_prob)
            values.append(out.value)
            env_action = head.to_env(out.action.cpu().numpy())
            where = self._where(t)
            next_obs, reward, terminated, truncated, info = self.guard.step(env_action, where)
            bad = self.guard.nonfinite(next_obs, reward, truncated, info, where)
            if bad is not None:
                next_obs, reward, terminated, truncated = self._skip_nonfinite(
                    buf, host, t, bad, out.value, reward, terminated, truncated
                )
                valid = valid & ~bad
                host.valid[t] = valid
                skipped += int(bad.sum())
            self.prev_action = from_host(env_action, self.device)
            self.prev_reward = from_host(reward, self.device, dtype)
            raw_rewards[t] = reward
            done = self._store_outcome(host, t, reward, terminated, truncated, valid)
            self._count_episodes(reward, done, valid, returns, lengths)
            if self.next_step_autoreset:
                next_start = self.pending_reset  # after a reset-only step comes a new episode
                self.pending_reset = done & valid
            else:
                next_start = done
                if truncated.any():
                    ended = np.flatnonzero(truncated)
                    buf["bootstrap"][t, ended] = self._final_values(info, ended, out.state)
            if bad is not None:
                next_start = np.logical_or(next_start, bad)  # the env was reset
                self._forget_episodes(bad)
            self.state = out.state
            self.obs = as_observation(next_obs, self.device)
            self.episode_start = from_host(next_start, self.device, dtype)
            inputs = (next_obs, env_action, reward, next_start)
        for name, parts in (("actions", actions), ("log_probs", log_probs), ("values", values)):
            buf[name].copy_(torch.stack(parts))  # (T, B, ...)
        host.upload()
        self.unseen_rewards.append(raw_rewards[host.valid > 0])  # time-major, valid steps only
        next_values = self._next_values(buf)
        stacked_states = tuple(torch.stack(parts) for parts in zip(*chunk_states, strict=True))
        return Rollout(
            **buf,
            next_values=next_values,
            chunk_states=stacked_states,
            episode_returns=returns,
            episode_lengths=lengths,
            nonfinite_steps=skipped,
        )

    def _next_values(self, buf: dict[str, Tensor]) -> Tensor:
        """``V`` of the observation after each step, ``[T, B]``: the next stored value (the
        current observation's after the last step), or the bootstrap of a SAME_STEP truncation.
        Takes ``buf["bootstrap"]``, whose truncated rows already hold ``V(final obs)``."""
        next_values = buf.pop("bootstrap")  # (T, B)
        last_value = self.policy.value(
            self.obs, self.state, self.episode_start, self.prev_action, self.prev_reward
        )
        following = torch.cat([buf["values"][1:], last_value.unsqueeze(0)])  # (T, B)
        if self.next_step_autoreset:
            next_values.copy_(following)  # the final obs's value is the next stored value
        else:
            next_values.copy_(torch.where(buf["truncated"].bool(), next_values, following))
        return next_values

    def _host_inputs(self) -> tuple:
        """The policy's next inputs as host arrays: ``(obs, prev_action, prev_reward,
        episode_start)``, as :meth:`HostBuffers.write_inputs` takes them."""
        obs = self.obs.data if isinstance(self.obs, TensorTree) else self.obs
        live = (obs, self.prev_action, self.prev_reward, self.episode_start)
        return tree_map(lambda x: x.cpu().numpy(), live)

    def _where(self, t: int) -> str:
        return f"at rollout step {t} after global step {self.start_step:,}"

    def _skip_nonfinite(self, buf, host, t: int, bad, value, reward, terminated, truncated):
        """Mask out step ``t`` of the ``bad`` rows, cut their episodes before it, reset them.

        The transition gets ``valid = 0`` and reward 0 (it never trains); the previous step,
        if it was in the same episode, becomes the episode's last (truncated, bootstrapped from
        this step's value), so no advantage reaches across the bad step; the env copies are
        reset and their running episode statistics dropped (:meth:`_forget_episodes`).

        Returns:
            ``(next_obs, reward, terminated, truncated)`` with the bad rows replaced.
        """
        if t > 0:
            cut = np.flatnonzero(bad)
            ended = host.terminated[t - 1, cut] + host.truncated[t - 1, cut]
            cut = cut[(host.valid[t - 1, cut] > 0) & (ended == 0)]
            host.truncated[t - 1, cut] = 1.0
            index = torch.as_tensor(cut, device=self.device)
            buf["bootstrap"][t - 1, index] = value[index]
        next_obs = self.guard.reset_rows(bad, self._where(t))
        reward = np.where(bad, 0.0, reward)
        return next_obs, reward, terminated & ~bad, truncated & ~bad

    def _forget_episodes(self, rows: np.ndarray) -> None:
        """Drop the running statistics of episodes cut by a skipped step (``rows`` [B] bool)."""
        self.running_return[rows] = 0.0
        self.running_length[rows] = 0
        self.pending_reset[rows] = False
        if self.reward_scaler is not None:
            self.reward_scaler.discounted[rows] = 0.0

    def _store_outcome(self, host, t: int, reward, terminated, truncated, valid) -> np.ndarray:
        """Store step ``t``'s (scaled) reward and episode ends; returns ``done`` ``[B]``."""
        done = np.logical_or(terminated, truncated)
        if self.reward_scaler is not None:
            reward = self.reward_scaler(reward, done & valid, valid)
        host.rewards[t] = reward
        host.terminated[t] = terminated
        host.truncated[t] = truncated
        return done

    def _final_values(self, info: dict, rows: np.ndarray, state: State) -> Tensor:
        """Values of the final observations of truncated ``rows`` (SAME_STEP autoreset).

        Called right after the step, so ``state`` and the previous action / reward are those the
        final observation was reached with.
        """
        final_obs = as_observation(final_observations(info, rows), self.device)
        index = torch.as_tensor(rows, device=self.device)
        row_state = tuple(s.index_select(1, index) for s in state)
        no_reset = torch.zeros(len(rows), device=self.device, dtype=self.policy.dtype)
        previous = (self.prev_action[index], self.prev_reward[index])
        return self.policy.value(final_obs, row_state, no_reset, *previous)

    def _count_episodes(self, reward, done, valid, returns: list, lengths: list) -> None:
        self.running_return += np.where(valid, reward, 0.0)
        self.running_length += valid
        finished = done & valid
        if np.count_nonzero(finished):
            returns.extend(self.running_return[finished].tolist())
            lengths.extend(self.running_length[finished].tolist())
            self.running_return[finished] = 0.0
            self.running_length[finished] = 0

    def state_dict(self) -> dict:
        """The live state between rollouts, as tensors and plain data (for exact resume).

        Holds the current observation, recurrent state, ``episode_start``, previous action and
        reward, the NEXT_STEP pending resets, the running episode returns/lengths, the raw
        rewards not yet in the policy's statistics and the reward scaler's statistics. It
        describes the envs' current episodes, so it only makes sense together with the envs'
        own state (see ``recurrl.run.resume``).
        """
        scaler = None
        if self.reward_scaler is not None:  # numpy scalars -> Python numbers (weights_only)
            scaler = {
                key: value.item() if isinstance(value, np.generic) else value
                for key, value in self.reward_scaler.state_dict().items()
            }
        obs = self.obs.data if isinstance(self.obs, TensorTree) else self.obs
        return {
            "obs": tree_map(lambda x: x.cpu(), obs),  # a tensor, or a dict / tuple of them
            "state": tuple(s.cpu() for s in self.state),
            "episode_start": self.episode_start.cpu(),
            "prev_action": self.prev_action.cpu(),
            "prev_reward": self.prev_reward.cpu(),
            "pending_reset": torch.from_numpy(self.pending_reset.copy()),
            "running_return": torch.from_numpy(self.running_return.copy()),
            "running_length": torch.from_numpy(self.running_length.copy()),
            "unseen_rewards": [torch.from_numpy(r) for r in self.unseen_rewards],
            "reward_scaler": scaler,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; shapes must match this collector's envs and policy."""
        obs = tree_map(lambda x: x.to(self.device), state["obs"])
        obs = TensorTree(obs) if isinstance(obs, dict | tuple) else obs
        before = [tuple(x.shape) for x in tree_leaves(self.obs)]
        after = [tuple(x.shape) for x in tree_leaves(obs)]
        if before != after:
            raise ValueError(f"collector state has observations {after}, these envs give {before}")
        self.obs = obs
        self.state = tuple(s.to(self.device) for s in state["state"])
        self.episode_start = state["episode_start"].to(self.device)
        self.prev_action = state["prev_action"].to(self.device)
        self.prev_reward = state["prev_reward"].to(self.device)
        self.pending_reset = state["pending_reset"].numpy().copy()
        self.running_return = state["running_return"].numpy().copy()
        self.running_length = state["running_length"].numpy().copy()
        self.unseen_rewards = [r.numpy().copy() for r in state["unseen_rewards"]]
        if self.reward_scaler is not None and state["reward_scaler"] is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
