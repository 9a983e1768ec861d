"""Greedy episodes for the probe: what the policy saw, held and did at every step.

:func:`greedy_steps` plays until each env finished its share of the episodes, recording the
raw observations, episode starts, previous actions and rewards and the recurrent state before
each step (what :mod:`recurrl.app.probe.horizon` replays), and, for the state probe, the
``memory_target`` / ``memory_age`` of each observation and what the policy holds after reading
it (:func:`probe_features`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from recurrl.algo.make_env import autoreset_is_next_step, make_vector_env
from recurrl.app.probe.errors import ProbeError
from recurrl.policy import ActorCritic
from recurrl.policy.cores import WINDOW_CORES
from recurrl.policy.inputs import null_action
from recurrl.policy.tree import as_observation

_RECORDED = ("obs", "start", "valid", "pa", "pr", "state", "target", "age", "features")


def greedy_steps(
    policy: ActorCritic,
    env_config,
    episodes: int,
    num_envs: int,
    seed: int,
    memory: bool = False,
):
    """Play until each of ``num_envs`` envs finished its share of ``episodes`` greedy episodes.

    Returns a dict of ``[T, N, ...]`` tensors: ``obs`` (raw), ``episode_start``, ``valid`` (0 on
    NEXT_STEP reset-only steps), ``prev_action``, ``prev_reward`` and ``states`` (a tuple of
    ``[T, layers, N, H]``: the state before each step, episode resets not yet applied). With
    ``memory``, also ``memory_target`` and ``memory_age`` ``[T, N]`` (int64, from the ``info``
    that came with each observation; -1 where it had none) and ``features`` ``[T, N, F]``: what
    the policy holds after reading the step's observation (see :func:`probe_features`).
    """
    num_envs = max(1, min(num_envs, episodes))
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    envs = make_vector_env(env_config, num_envs)
    outputs: list[Tensor] = []  # core outputs of the step, for the windowed cores
    hooks = _core_output_hooks(policy, outputs) if memory else []
    try:
        next_step = autoreset_is_next_step(envs, env_config.id)
        record = _play(policy, envs, next_step, quota, seed, outputs, memory)
    finally:
        envs.close()
        for hook in hooks:
            hook.remove()
    return _stacked(record, memory)


def _play(
    policy: ActorCritic,
    envs,
    next_step: bool,
    quota: np.ndarray,
    seed: int,
    outputs: list[Tensor],
    memory: bool,
) -> dict[str, list]:
    """Greedy steps in ``envs`` until every env played its ``quota`` of episodes; returns the
    per-step records (:data:`_RECORDED`), lists of ``[N, ...]`` tensors."""
    num_envs = len(quota)
    device = next(policy.parameters()).device
    obs, info = envs.reset(seed=seed)
    state = policy.initial_state(num_envs)
    episode_start = np.ones(num_envs, dtype=bool)
    prev_action = torch.as_tensor(null_action(policy.action_space, num_envs), device=device)
    prev_reward = torch.zeros(num_envs, dtype=policy.dtype, device=device)
    skip = np.zeros(num_envs, dtype=bool)
    done_count = np.zeros(num_envs, dtype=int)
    record: dict[str, list] = {k: [] for k in _RECORDED}
    with policy.acting():
        while (done_count < quota).any():
            obs_t = _array_observation(obs, device)
            starts = torch.as_tensor(episode_start, dtype=torch.float32, device=device)
            record["obs"].append(obs_t.clone())
            record["start"].append(starts.clone())
            record["valid"].append(torch.as_tensor(~skip))
            record["pa"].append(prev_action.clone())
            record["pr"].append(prev_reward.clone())
            record["state"].append(tuple(s.clone() for s in state))
            outputs.clear()
            out = policy.step(obs_t, state, starts, True, prev_action, prev_reward)
            state = out.state
            if memory:
                _record_memory(record, info, num_envs, outputs or state)
            action = policy.head.to_env(out.action.cpu().numpy())
            obs, reward, terminated, truncated, info = envs.step(action)
            prev_action = torch.as_tensor(action, device=device)
            prev_reward = torch.as_tensor(reward, dtype=policy.dtype, device=device)
            done = (terminated | truncated) & ~skip
            done_count += done
            episode_start = skip.copy() if next_step else done
            skip = done if next_step else skip
    return record


def _array_observation(obs, device) -> Tensor:
    """The batch of observations as one tensor; a Dict or Tuple observation is refused."""
    obs_t = as_observation(obs, device)
    if not isinstance(obs_t, Tensor):
        raise ProbeError("probe needs array observations (Box); this env's are a Dict or Tuple")
    return obs_t


def _record_memory(record: dict[str, list], info: dict, num_envs: int, held) -> None:
    """Append the ``memory_target`` / ``memory_age`` that came with the step's observation and
    the features ``held`` after reading it (core outputs or state tensors)."""
    target, age = _memory_entries(info, num_envs)
    record["target"].append(target)
    record["age"].append(age)
    record["features"].append(_flat_features(held).cpu())


def _stacked(record: dict[str, list], memory: bool) -> dict:
    """:func:`greedy_steps`' result from the per-step records: each list stacked on a new
    first (time) axis."""
    states = tuple(torch.stack(parts) for parts in zip(*record["state"], strict=True))
    steps = {
        "obs": torch.stack(record["obs"]),
        "episode_start": torch.stack(record["start"]),
        "valid": torch.stack(record["valid"]),
        "prev_action": torch.stack(record["pa"]),
        "prev_reward": torch.stack(record["pr"]),
        "states": states,
    }
    if memory:
        steps["memory_target"] = torch.stack(record["target"])
        steps["memory_age"] = torch.stack(record["age"])
        steps["features"] = torch.stack(record["features"])
    return steps


def probe_features(policy: ActorCritic) -> str:
    """What the state probe reads, in words: the recurrent state after each step for the
    recurrent cores (every layer's ``h``, and ``c`` for lstm; the critic core's too, when it
    has its own), the core's output for the transformer and tcn (their state is a window of
    past inputs, not a summary) and the memoryless core."""
    core = policy.config.core
    owner = "actor and critic cores" if policy.critic_core is not None else "shared core"
    if core == "none":
        return f"memoryless core's output ({owner})"
    if core in WINDOW_CORES:
        return f"{core} core output ({owner}; its state is a window of inputs, not a summary)"
    parts = "h, c" if core == "lstm" else "h"
    return f"{core} recurrent state {parts} ({owner}, every layer)"


def _core_output_hooks(policy: ActorCritic, outputs: list[Tensor]) -> list:
    """Hooks that append the core outputs (the inputs of the actor and critic MLPs, ``[B, H]``)
    to ``outputs``, for the cores whose state is a window (:func:`probe_features`)."""
    if policy.config.core not in WINDOW_CORES and policy.config.core != "none":
        return []
    readers = [policy.actor_mlp] + ([policy.critic_mlp] if policy.critic_core is not None else [])
    return [m.register_forward_pre_hook(lambda _m, args: outputs.append(args[0])) for m in readers]


def _flat_features(parts) -> Tensor:
    """``[B, F]`` from core outputs ``[B, H]`` or state tensors ``[layers, B, H]``."""
    flat = [p if p.dim() == 2 else p.transpose(0, 1).flatten(1) for p in parts]  # each (B, F_i)
    return torch.cat(flat, dim=1).float()


def _memory_entries(info: dict, num_envs: int) -> tuple[Tensor, Tensor]:
    """``info["memory_target"]`` and ``info["memory_age"]`` as ``[N]`` int64, -1 where absent
    (Gymnasium's vector envs mark present rows in ``info["_memory_target"]``)."""
    target, age = info.get("memory_target"), info.get("memory_age")
    if target is None or age is None:
        missing = torch.full((num_envs,), -1, dtype=torch.long)
        return missing, missing.clone()
    present = np.asarray(info.get("_memory_target", np.ones(num_envs, dtype=bool)), dtype=bool)
    target = np.where(present, np.asarray(target, dtype=np.int64), -1)
    age = np.where(present, np.asarray(age, dtype=np.int64), -1)
    return torch.from_numpy(target), torch.from_numpy(age)


def longest_episode(episode_start: Tensor) -> int:
    """The most steps between two episode starts (or to the end) over ``[T, N]``."""
    longest = 0
    for column in episode_start.T.bool().tolist():
        starts = [t for t, s in enumerate(column) if s] + [len(column)]
        longest = max([longest] + [b - a for a, b in zip(starts, starts[1:], strict=False)])
    return longest
