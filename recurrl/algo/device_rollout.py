"""Rollouts from a device-resident vector env: the env, the policy and the buffers on one device.

A device-resident env (``env.vectorization: torch``, :mod:`recurrl.envs.device`) takes and
returns tensors on the policy's device and always returns a dense ``info["final_obs"]``, so a
rollout needs no host round trip per step. :class:`DeviceCollector` fills the same
:class:`~recurrl.algo.rollout.Rollout` as :class:`~recurrl.algo.rollout.Collector` (SAME_STEP
autoreset: a truncated step bootstraps from the value of its final observation, computed with the
state that reached it) with nothing but tensor ops: episode returns and lengths are gathered once
per rollout, the reward scaling runs on the device (:class:`DeviceRewardScaler`).

On CUDA the policy's acting step (normaliser, encoder, cores, heads, sampling) can be captured
once as a CUDA graph and replayed every step (``capture=True``): static input tensors are
refreshed with a few copies, one graph launch replaces the ~50 kernel launches of the eager step.
The graph reads the parameters in place, so it stays valid across updates (the optimiser writes
the parameters in place) and is captured again only if the batch changes. Capture is skipped on
CPU and falls back to the eager step, with the reason kept in :attr:`DeviceCollector.capture_note`,
if anything in the step cannot be captured.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from recurrl.algo.distributed import SINGLE, World
from recurrl.algo.rollout import Rollout
from recurrl.config import ConfigError
from recurrl.policy import ActorCritic
from recurrl.policy.cores import State
from recurrl.policy.inputs import null_action
from recurrl.policy.tree import tree_map


def is_device_env(envs: Any) -> bool:
    """Whether ``envs`` is a device-resident vector env (it has a torch ``device``)."""
    return isinstance(envs, gym.vector.VectorEnv) and isinstance(
        getattr(envs, "device", None), torch.device
    )


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``cuda`` is the current CUDA device, e.g. ``cuda:0``)."""

    def index(device: torch.device) -> int | None:
        if device.type == "cuda" and device.index is None:
            return torch.cuda.current_device()
        return device.index

    return a.type == b.type and index(a) == index(b)


class DeviceRewardScaler:
    """:class:`~recurrl.algo.returns.RewardScaler` on tensors: rewards divided by the running
    std of the discounted return per env stream, clipped; the statistics stay on the device
    (float64) so scaling a step needs no host sync. Its ``state_dict`` is the host scaler's."""

    def __init__(self, num_envs: int, gamma: float, device: torch.device, clip: float = 10.0):
        self.gamma, self.clip, self.epsilon = gamma, clip, 1e-8
        f64 = {"dtype": torch.float64, "device": device}
        self.discounted = torch.zeros(num_envs, **f64)
        self.mean, self.var = torch.zeros((), **f64), torch.ones((), **f64)
        self.count = torch.zeros((), **f64)

    def __call__(self, reward: Tensor, done: Tensor) -> Tensor:
        self.discounted.mul_(self.gamma).add_(reward)
        batch = self.discounted
        n = batch.numel()
        total = self.count + n
        delta = batch.mean() - self.mean
        m2 = (
            self.var * self.count
            + batch.var(unbiased=False) * n
            + delta**2 * self.count * n / total
        )
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)
        self.discounted.masked_fill_(done, 0.0)
        scaled = reward / torch.sqrt(self.var + self.epsilon)
        return scaled.clamp(-self.clip, self.clip)

    def state_dict(self) -> dict:
        return {
            "discounted": self.discounted.tolist(),
            "mean": self.mean.item(),
            "var": self.var.item(),
            "count": int(self.count.item()),
        }

    def load_state_dict(self, state: dict) -> None:
        self.discounted.copy_(torch.as_tensor(state["discounted"], dtype=torch.float64))
        self.mean.fill_(state["mean"])
        self.var.fill_(state["var"])
        self.count.fill_(state["count"])


class DeviceCollector:
    """Collects ``T``-step rollouts from a device-resident vector env (see the module doc).

    Args: as :class:`~recurrl.algo.rollout.Collector`, except:
        envs: a device-resident vector env on the policy's device (SAME_STEP autoreset).
        reward_scaler: a :class:`DeviceRewardScaler` or None.
        capture: replay the acting step as a CUDA graph (default: on CUDA).
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        policy: ActorCritic,
        rollout_len: int,
        bptt_len: int,
        seed: int | None = None,
        reward_scaler: DeviceRewardScaler | None = None,
        env_id: str | None = None,
        world: World = SINGLE,
        capture: bool | None = None,
    ) -> None:
        self.envs, self.policy, self.world = envs, policy, world
        self.rollout_len, self.bptt_len = rollout_len, bptt_len
        self.reward_scaler = reward_scaler
        self.num_envs = envs.num_envs
        self.device = next(policy.parameters()).device
        self.env_id = env_id or type(envs).__name__
        if not same_device(envs.device, self.device):
            raise ConfigError(
                f"env.vectorization: the env {self.env_id} steps on {envs.device}, "
                f"the policy is on {self.device}"
            )
        mode = envs.metadata.get("autoreset_mode")
        if mode is not None and mode != gym.vector.AutoresetMode.SAME_STEP:
            raise ConfigError(f"{self.env_id}: a device env must autoreset SAME_STEP, got {mode}")
        self.start_step = 0
        obs, _ = envs.reset(seed=seed)
        self.obs = obs
        dtype = policy.dtype
        self.episode_start = torch.ones(self.num_envs, device=self.device, dtype=dtype)
        self.prev_action = torch.as_tensor(
            null_action(policy.action_space, self.num_envs), device=self.device
        )
        self.prev_reward = torch.zeros(self.num_envs, device=self.device, dtype=dtype)
        self.state = policy.initial_state(self.num_envs)
        self.running_return = torch.zeros(self.num_envs, device=self.device, dtype=torch.float64)
        self.running_length = torch.zeros(self.num_envs, device=self.device, dtype=torch.int64)
        self.unseen_rewards: list[Tensor] = []
        self.pending_reset = np.zeros(self.num_envs, dtype=bool)  # never set (SAME_STEP)
        self.capture = self.device.type == "cuda" if capture is None else capture
        self.capture_note = "" if self.capture else "off"
        self._graph: _Graphed | None = None
        self._value_graph: _Graphed | None = None

    # --- acting -----------------------------------------------------------------------------

    def _env_action(self, action: Tensor) -> Tensor:
        """The policy's action ``[B, *action_shape]`` as the env takes it (on the device)."""
        space = self.envs.single_action_space
        if isinstance(space, spaces.Discrete):
            return action.reshape(-1) + int(space.start) if int(space.start) else action
        if isinstance(space, spaces.Box):
            low = torch.as_tensor(space.low, device=action.device, dtype=action.dtype)
            high = torch.as_tensor(space.high, device=action.device, dtype=action.dtype)
            return torch.maximum(torch.minimum(action, high), low).reshape(-1, *space.shape)
        if isinstance(space, spaces.MultiDiscrete):
            start = torch.as_tensor(space.start, device=action.device)
            return (action + start).reshape(-1, *space.shape)
        if isinstance(space, spaces.MultiBinary):
            return action.reshape(-1, *np.atleast_1d(space.shape))
        raise ConfigError(f"env.vectorization: action space {space} is not supported on a device")

    def _act(self, obs, state, episode_start, prev_action, prev_reward):
        out = self.policy.step(obs, state, episode_start, False, prev_action, prev_reward)
        return out.action, out.log_prob, out.value, out.state

    def _final_value(self, final_obs, state, prev_action, prev_reward) -> Tensor:
        no_reset = torch.zeros_like(self.episode_start)
        return self.policy.value(final_obs, state, no_reset, prev_action, prev_reward)

    def _graphed(self, name: str, fn, inputs: tuple):
        """``fn(*inputs)``, through its CUDA graph when capturing (captured on first use)."""
        graph = getattr(self, name)
        if self.capture and graph is None:
            try:
                graph = _Graphed(fn, inputs)
                setattr(self, name, graph)
                self.capture_note = "CUDA graph"
            except Exception as error:  # noqa: BLE001 - any failure: act eagerly, say why
                self.capture, self.capture_note = False, f"eager ({type(error).__name__}: {error})"
                self._graph = self._value_graph = None
                torch.cuda.synchronize()
        if self.capture and graph is not None:
            return graph(inputs)
        return fn(*inputs)

    def _acting_step(self) -> tuple[Tensor, Tensor, Tensor, State]:
        inputs = (self.obs, self.state, self.episode_start, self.prev_action, self.prev_reward)
        return self._graphed("_graph", self._act, inputs)

    # --- rollouts ---------------------------------------------------------------------------

    def collect(self, global_step: int = 0) -> Rollout:
        """Step every env ``T`` times on the device; the rollout with bootstrap values."""
        self.start_step = global_step
        with self.world.synced_statistics(self.policy):
            self.fold_rewards()
        T, B, dev, dtype = self.rollout_len, self.num_envs, self.device, self.policy.dtype
        head = self.policy.head

        def zeros(*shape, dtype=dtype) -> Tensor:
            return torch.zeros(T, B, *shape, dtype=dtype, device=dev)

        buf = {
            "obs": torch.zeros(T, *self.obs.shape, dtype=self.obs.dtype, device=dev),
            "prev_actions": torch.zeros(
                T, *self.prev_action.shape, dtype=self.prev_action.dtype, device=dev
            ),
            "prev_rewards": zeros(),
            "actions": zeros(*head.action_shape, dtype=head.action_dtype),
            **{k: zeros() for k in ("log_probs", "values", "rewards", "terminated")},
            **{k: zeros() for k in ("truncated", "episode_start", "valid", "bootstrap")},
        }
        buf["valid"].fill_(1.0)
        raw_rewards = zeros(dtype=torch.float64)  # as the host collector folds them
        episode_return = torch.zeros(T, B, dtype=torch.float64, device=dev)
        episode_length = torch.zeros(T, B, dtype=torch.int64, device=dev)
        episode_end = torch.zeros(T, B, dtype=torch.bool, device=dev)
        chunk_states: list[State] = []
        # A captured graph reads the parameters themselves (they change in place between
        # rollouts); eager steps take the weights derived once per rollout (policy.acting()).
        with torch.inference_mode() if self.capture else self.policy.acting():
            for t in range(T):
                if t % self.bptt_len == 0:
                    chunk_states.append(tuple(s.clone() for s in self.state))
                buf["obs"][t] = self.obs
                buf["prev_actions"][t] = self.prev_action
                buf["prev_rewards"][t] = self.prev_reward
                buf["episode_start"][t] = self.episode_start
                action, log_prob, value, state = self._acting_step()
                buf["actions"][t] = action
                buf["log_probs"][t] = log_prob
                buf["values"][t] = value
                env_action = self._env_action(action)
                obs, reward, terminated, truncated, info = self.envs.step(env_action)
                done = terminated | truncated
                reward = reward.to(torch.float64)
                self.prev_action = env_action
                self.prev_reward = reward.to(dtype)
                raw_rewards[t] = reward
                stored = reward if self.reward_scaler is None else self.reward_scaler(reward, done)
                buf["rewards"][t] = stored
                buf["terminated"][t] = terminated
                buf["truncated"][t] = truncated
                self.running_return += reward
                self.running_length += 1
                episode_return[t] = self.running_return
                episode_length[t] = self.running_length
                episode_end[t] = done
                self.running_return.masked_fill_(done, 0.0)
                self.running_length.masked_fill_(done, 0)
                if getattr(self.envs, "can_truncate", True):
                    inputs = (info["final_obs"], state, self.prev_action, self.prev_reward)
                    final = self._graphed("_value_graph", self._final_value, inputs)
                    buf["bootstrap"][t] = torch.where(truncated, final, 0.0)
                self.state, self.obs = state, obs
                self.episode_start = done.to(dtype)
            next_values = self._next_values(buf)
        self.unseen_rewards.append(raw_rewards.flatten())
        returns = episode_return[episode_end].tolist()  # one sync per rollout
        lengths = episode_length[episode_end].tolist()
        stacked = tuple(torch.stack(parts) for parts in zip(*chunk_states, strict=True))
        return Rollout(
            **buf,
            next_values=next_values,
            chunk_states=tuple(s.clone() for s in stacked),  # normal tensors for the update
            episode_returns=returns,
            episode_lengths=lengths,
        )

    def _next_values(self, buf: dict[str, Tensor]) -> Tensor:
        next_values = buf.pop("bootstrap")
        last = self.policy.value(
            self.obs, self.state, self.episode_start, self.prev_action, self.prev_reward
        )
        following = torch.cat([buf["values"][1:], last.unsqueeze(0)])
        return torch.where(buf["truncated"].bool(), next_values, following)

    def fold_rewards(self) -> None:
        if self.unseen_rewards:
            self.policy.update_reward_statistics(torch.cat(self.unseen_rewards))
            self.unseen_rewards = []

    # --- exact resume -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """As :meth:`Collector.state_dict <recurrl.algo.rollout.Collector.state_dict>`."""
        scaler = None if self.reward_scaler is None else self.reward_scaler.state_dict()
        return {
            "obs": self.obs.cpu(),
            "state": tuple(s.cpu() for s in self.state),
            "episode_start": self.episode_start.cpu(),
            "prev_action": self.prev_action.cpu(),
            "prev_reward": self.prev_reward.cpu(),
            "pending_reset": torch.from_numpy(self.pending_reset.copy()),
            "running_return": self.running_return.cpu(),
            "running_length": self.running_length.cpu(),
            "unseen_rewards": [r.cpu().double() for r in self.unseen_rewards],
            "reward_scaler": scaler,
        }

    def load_state_dict(self, state: dict) -> None:
        obs = state["obs"]
        if isinstance(obs, dict | tuple) or tuple(obs.shape) != tuple(self.obs.shape):
            raise ValueError(
                f"collector state has observations {obs}, these envs give {list(self.obs.shape)}"
            )
        self.obs = obs.to(self.device)
        self.state = tuple(s.to(self.device) for s in state["state"])
        self.episode_start = state["episode_start"].to(self.device)
        self.prev_action = state["prev_action"].to(self.device)
        self.prev_reward = state["prev_reward"].to(self.device)
        self.running_return = state["running_return"].to(self.device, torch.float64)
        self.running_length = state["running_length"].to(self.device, torch.int64)
        self.unseen_rewards = [r.to(self.device) for r in state["unseen_rewards"]]
        if self.reward_scaler is not None and state["reward_scaler"] is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        self._graph = self._value_graph = None  # captured again with the restored inputs


class _Graphed:
    """``fn(*inputs)`` captured as a CUDA graph over static copies of its inputs (tensors and
    tuples of them); calling it copies the live inputs into the static ones, replays, and returns
    clones of the static outputs (the next replay overwrites them)."""

    def __init__(self, fn, inputs: tuple) -> None:
        self.static_inputs = _tree_clone(inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up (lazy inits, autotuning) off the capture
            for _ in range(2):
                fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = fn(*self.static_inputs)

    def __call__(self, inputs: tuple) -> tuple:
        _tree_copy(self.static_inputs, inputs)
        self.graph.replay()
        return _tree_clone(self.static_outputs)


def _tree_clone(tree):
    return tree_map(lambda x: x.clone() if isinstance(x, Tensor) else x, tree)


def _tree_copy(target, source) -> None:
    tree_map(lambda into, value: into.copy_(value), target, source)
