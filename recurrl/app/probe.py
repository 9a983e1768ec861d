"""``recurrl probe RUN_DIR``: what a trained recurrent policy remembers.

Three measurements on a run's final (or latest) checkpoint:

- **Memory horizon.** The policy plays greedy episodes in its env; every step ``t`` is then
  replayed as a window of the ``K + 1`` steps up to it (from the state the policy really had at
  the window's first step) with autograd, and the norm of the gradient of the action
  distribution's parameters (the head's linear output: logits, or the Gaussian mean) and of the
  value at ``t`` with respect to the normalised observation at ``t - k`` is taken for
  ``k = 0..K``. A lag that reaches back before ``t``'s episode start is skipped for that ``t``;
  each curve point is the mean over the steps where the lag exists. The gradient norm of a
  vector output is the Frobenius norm of its Jacobian.
- **Stale start states.** One fresh rollout (sampled actions, as in training) is collected; its
  chunk-start states, stored while acting, are compared with the ones
  :func:`recurrl.algo.ppo.refresh_start_states` recomputes, first with the same parameters
  (drift 0), then after each of ``E`` PPO epochs of updates on that rollout (a copy of the policy
  and a fresh Adam at the run's learning rate, one epoch per :func:`recurrl.algo.ppo.update`
  call). The drift is the mean over chunks after the first of ``|s_new - s_old| / |s_old|``
  (each chunk's states flattened together): how far the stored start states are from the ones
  the updated parameters would reach, what ``ppo.refresh_states`` corrects.
- **State probe.** For an env whose ``info`` carries ``memory_target`` and ``memory_age`` (the
  native memory tasks, see :mod:`recurrl.envs.core`), the policy plays greedy episodes of its
  own; after each step the recurrent state (the core's output for the windowed and memoryless
  cores, :func:`probe_features`) is paired with the target and age of the observation just
  read. Per age bucket, a linear classifier (least squares on one-hot targets, standardised
  features, a small ridge) is fitted on two thirds of the episodes and scored on the rest,
  against chance: the held-out frequency of the training side's most frequent class.

Writes ``probe/summary.json`` and, with matplotlib, ``probe/horizon.png``, ``probe/drift.png``
and ``probe/state_probe.png``.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recurrl.algo.make_env import autoreset_is_next_step, make_vector_env
from recurrl.policy import ActorCritic
from recurrl.policy.cores import WINDOW_CORES
from recurrl.policy.inputs import null_action
from recurrl.policy.normalize import RunningNormalizer
from recurrl.policy.tree import as_observation

DEFAULT_LAGS = 64
THRESHOLD = 0.01  # the horizon: the last lag whose gradient is at least 1% of lag 0's
STATE_EPISODES = 256  # greedy episodes of the state probe (a third held out)
EXACT_AGES = 32  # the state probe's ages below this get a bucket each, later ones double
RIDGE = 1e-2  # the state probe's ridge, per training sample on standardised features


class ProbeError(ValueError):
    """A probe that cannot run as asked (printed as one line, exit 2)."""


# --- collecting greedy episodes ----------------------------------------------------------------


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
        device = next(policy.parameters()).device
        obs, info = envs.reset(seed=seed)
        state = policy.initial_state(num_envs)
        episode_start = np.ones(num_envs, dtype=bool)
        prev_action = torch.as_tensor(null_action(policy.action_space, num_envs), device=device)
        prev_reward = torch.zeros(num_envs, dtype=policy.dtype, device=device)
        skip = np.zeros(num_envs, dtype=bool)
        done_count = np.zeros(num_envs, dtype=int)
        names = ("obs", "start", "valid", "pa", "pr", "state", "target", "age", "features")
        record: dict[str, list] = {k: [] for k in names}
        with policy.acting():
            while (done_count < quota).any():
                obs_t = as_observation(obs, device)
                if not isinstance(obs_t, Tensor):
                    raise ProbeError(
                        "probe needs array observations (Box); this env's are a Dict or Tuple"
                    )
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
                    target, age = _memory_entries(info, num_envs)
                    record["target"].append(target)
                    record["age"].append(age)
                    record["features"].append(_flat_features(outputs or state).cpu())
                action = policy.head.to_env(out.action.cpu().numpy())
                obs, reward, terminated, truncated, info = envs.step(action)
                prev_action = torch.as_tensor(action, device=device)
                prev_reward = torch.as_tensor(reward, dtype=policy.dtype, device=device)
                done = (terminated | truncated) & ~skip
                done_count += done
                episode_start = skip.copy() if next_step else done
                skip = done if next_step else skip
    finally:
        envs.close()
        for hook in hooks:
            hook.remove()
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


# --- memory horizon ----------------------------------------------------------------------------


def _normalised(policy: ActorCritic, obs: Tensor) -> tuple[ActorCritic, Tensor]:
    """A copy of ``policy`` without its observation normaliser, and ``obs`` normalised by it
    (so gradients are taken with respect to what the encoder reads)."""
    probe = copy.deepcopy(policy)
    if isinstance(probe.obs_normalizer, RunningNormalizer):
        with torch.no_grad():
            obs = probe.obs_normalizer(obs)
    elif probe.obs_normalizer is not None:
        raise ProbeError("probe supports normalised array observations only")
    probe.obs_normalizer = None
    return probe, obs.to(policy.dtype)


def memory_horizon(policy: ActorCritic, steps: dict, lags: int, batch: int = 256) -> dict:
    """Gradient-norm curves over lags ``0..lags`` from :func:`greedy_steps`' output.

    Returns ``{"lags": [0..K], "action": [...], "value": [...], "counts": [...]}``; a lag no
    target reaches has ``None``.
    """
    probe, obs = _normalised(policy, steps["obs"].float())
    T, N = steps["episode_start"].shape
    K = lags
    starts = steps["episode_start"].bool()
    # Where each step's episode began (for the lags that stay inside it).
    episode_begin = torch.zeros(T, N, dtype=torch.long)
    current = torch.zeros(N, dtype=torch.long)
    for t in range(T):
        current = torch.where(starts[t], torch.full_like(current, t), current)
        episode_begin[t] = current
    targets = [(t, b) for t in range(T) for b in range(N) if steps["valid"][t, b]]
    initial = probe.initial_state(1)
    sums = {name: torch.zeros(K + 1, dtype=torch.float64) for name in ("action", "value")}
    counts = torch.zeros(K + 1, dtype=torch.float64)
    captured: list[Tensor] = []
    hook = probe.head.linear.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        for first in range(0, len(targets), batch):
            group = targets[first : first + batch]
            windows = _windows(steps, obs, group, K, initial)
            x = windows["obs"].requires_grad_(True)
            captured.clear()
            _, value, _ = probe(
                x,
                windows["state"],
                windows["episode_start"],
                windows["prev_action"],
                windows["prev_reward"],
            )
            params = captured[-1][-1]  # (W, P): the distribution's parameters at the target
            squared = torch.zeros(K + 1, len(group), dtype=torch.float64)
            for p in range(params.shape[-1]):
                (grad,) = torch.autograd.grad(params[:, p].sum(), x, retain_graph=True)
                squared += grad.double().pow(2).flatten(2).sum(-1)
            (grad,) = torch.autograd.grad(value[-1].sum(), x)
            value_norm = grad.double().pow(2).flatten(2).sum(-1).sqrt()  # (K+1, W)
            action_norm = squared.sqrt()
            # Window row j is lag K - j; keep lags inside the target's episode.
            t_index = torch.tensor([t for t, _ in group])
            begin = torch.stack([episode_begin[t, b] for t, b in group])
            lag = torch.arange(K, -1, -1).unsqueeze(1)  # (K+1, 1)
            inside = (t_index.unsqueeze(0) - lag) >= begin.unsqueeze(0)  # (K+1, W)
            inside = inside.double()
            sums["action"] += (action_norm * inside).sum(1).flip(0)
            sums["value"] += (value_norm * inside).sum(1).flip(0)
            counts += inside.sum(1).flip(0)
    finally:
        hook.remove()

    def curve(total: Tensor) -> list[float | None]:
        return [float(s / c) if c > 0 else None for s, c in zip(total, counts, strict=True)]

    return {
        "lags": list(range(K + 1)),
        "action": curve(sums["action"]),
        "value": curve(sums["value"]),
        "counts": [int(c) for c in counts],
    }


def _windows(steps: dict, obs: Tensor, group: list, K: int, initial) -> dict:
    """The ``K + 1`` steps up to each target ``(t, b)`` of ``group`` as ``[K+1, W, ...]``,
    with the state before the window's first step; steps before 0 are padding (zeros, then
    the episode start at step 0 resets whatever the padding did)."""

    def window(x: Tensor, t: int, b: int) -> Tensor:
        lo = t - K
        part = x[max(lo, 0) : t + 1, b]
        if lo < 0:
            part = torch.cat([torch.zeros(-lo, *part.shape[1:], dtype=part.dtype), part])
        return part

    out = {
        "obs": torch.stack([window(obs, t, b) for t, b in group], 1),
        "episode_start": torch.stack([window(steps["episode_start"], t, b) for t, b in group], 1),
        "prev_action": torch.stack([window(steps["prev_action"], t, b) for t, b in group], 1),
        "prev_reward": torch.stack([window(steps["prev_reward"], t, b) for t, b in group], 1),
    }
    states = []
    for i, parts in enumerate(steps["states"]):  # each [T, layers, N, H]
        columns = [
            parts[t - K, :, b] if t - K >= 0 else initial[i][:, 0] for t, b in group
        ]  # each [layers, H]
        states.append(torch.stack(columns, 1))  # [layers, W, H]
    out["state"] = tuple(states)
    return out


def horizon_lag(curve: list[float | None], threshold: float = THRESHOLD) -> dict:
    """``first_below``: the first lag >= 1 under ``threshold`` x lag 0's gradient (None if none
    is); ``last_above``: the last lag at or over it (0 when only the present step counts)."""
    base = curve[0]
    if base is None or base == 0:
        return {"first_below": None, "last_above": None}
    first_below = next(
        (k for k, v in enumerate(curve) if k > 0 and v is not None and v < threshold * base),
        None,
    )
    above = [k for k, v in enumerate(curve) if v is not None and v >= threshold * base]
    return {"first_below": first_below, "last_above": max(above)}


# --- state probe -------------------------------------------------------------------------------


def age_buckets(max_age: int, exact: int = EXACT_AGES) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` age ranges up to ``max_age``: one per age below ``exact``,
    then ranges that double, ``(exact, 2 * exact - 1)``, ``(2 * exact, 4 * exact - 1)``, ..."""
    buckets = [(age, age) for age in range(min(exact, max_age + 1))]
    first = exact
    while first <= max_age:
        buckets.append((first, 2 * first - 1))
        first *= 2
    return buckets


def probe_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, ridge: float = RIDGE
) -> float:
    """Held-out accuracy of a linear classifier: least squares from standardised features
    ``[S, F]`` to one-hot targets ``[S]`` (ridge ``ridge * S_train`` on the weights, not on the
    bias), the class of the largest output."""
    x = train_x.double()
    mean, scale = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)  # (F,)
    x = (x - mean) / scale
    classes = int(max(train_y.max(), test_y.max())) + 1
    y = torch.nn.functional.one_hot(train_y, classes).double()  # (S, C)
    y_mean = y.mean(0)
    gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)  # (F, F)
    weights = torch.linalg.solve(gram, x.T @ (y - y_mean))  # (F, C)
    scores = ((test_x.double() - mean) / scale) @ weights + y_mean  # (S_test, C)
    return float((scores.argmax(1) == test_y).double().mean())


def state_probe(
    features: Tensor,
    targets: Tensor,
    ages: Tensor,
    episodes: Tensor,
    seed: int = 0,
    exact: int = EXACT_AGES,
) -> dict:
    """Linear-probe accuracy at decoding ``targets`` from ``features`` by age bucket.

    Args:
        features: ``[S, F]`` what the policy holds after each sample's observation.
        targets: ``[S]`` int64 class ids (``memory_target``).
        ages: ``[S]`` steps since the target was shown (``memory_age``).
        episodes: ``[S]`` episode ids: a third of the episodes (drawn with ``seed``) are held
            out, so no episode gives samples to both sides.
        seed: the split's seed.
        exact: ages below it get a bucket each (:func:`age_buckets`).

    Returns:
        ``ages`` / ``age_max`` (each bucket's first and last age), ``accuracy`` (held out, None
        where a side has no sample), ``chance`` (the held-out frequency of the training
        split's most frequent class: what predicting it scores), ``samples`` per bucket, and
        ``train_episodes`` / ``test_episodes``.
    """
    ids = episodes.unique()
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    held_out = ids[order[: len(ids) // 3]]
    test = torch.isin(episodes, held_out)
    result: dict[str, Any] = {k: [] for k in ("ages", "age_max", "accuracy", "chance", "samples")}
    for first, last in age_buckets(int(ages.max()), exact):
        rows = (ages >= first) & (ages <= last)
        if not rows.any():
            continue
        train_rows, test_rows = rows & ~test, rows & test
        accuracy = chance = None
        if train_rows.any() and test_rows.any():
            train_y, test_y = targets[train_rows], targets[test_rows]
            accuracy = probe_accuracy(features[train_rows], train_y, features[test_rows], test_y)
            majority = torch.bincount(train_y).argmax()
            chance = float((test_y == majority).double().mean())
        for key, value in zip(
            result, (first, last, accuracy, chance, int(rows.sum())), strict=True
        ):
            result[key].append(value)
    result["train_episodes"] = len(ids) - len(held_out)
    result["test_episodes"] = len(held_out)
    return result


def probe_memory(policy: ActorCritic, env_config, episodes: int, num_envs: int, seed: int) -> dict:
    """Play ``episodes`` greedy episodes recording ``memory_target`` / ``memory_age`` and the
    policy's features (:func:`probe_features`), and run :func:`state_probe` on the steps that
    have a target."""
    steps = greedy_steps(policy, env_config, episodes, num_envs, seed, memory=True)
    T, N = steps["episode_start"].shape
    column_offset = torch.arange(N) * (T + 1)  # (N,): episode ids unique across envs
    episode = steps["episode_start"].long().cumsum(0) + column_offset  # (T, N)
    keep = steps["valid"].bool() & (steps["memory_target"] >= 0)  # (T, N)
    features = steps["features"][keep]  # (S, F)
    result = state_probe(
        features, steps["memory_target"][keep], steps["memory_age"][keep], episode[keep], seed
    )
    return {
        "features": probe_features(policy),
        "feature_size": int(features.shape[1]),
        "method": "least squares on one-hot targets (ridge), standardised features",
        **result,
    }


# --- stale start states ------------------------------------------------------------------------


def relative_drift(stored, recomputed, num_envs: int) -> float | None:
    """Mean over chunks after the first of ``|new - old| / |old|`` (states of a chunk flattened
    together); None when the rollout is one chunk."""
    old = torch.cat([s.transpose(0, 1).flatten(1) for s in stored], 1).double()  # (S, F)
    new = torch.cat([s.transpose(0, 1).flatten(1) for s in recomputed], 1).double()
    old, new = old[num_envs:], new[num_envs:]  # chunk 0 is the rollout's start state
    if old.shape[0] == 0:
        return None
    ratio = (new - old).norm(dim=1) / old.norm(dim=1).clamp(min=1e-12)
    return float(ratio.mean())


def state_drift(policy: ActorCritic, config, payload: dict, epochs: int, seed: int) -> dict:
    """Drift of the chunk-start states of one fresh rollout: same parameters, then after each
    of ``epochs`` PPO epochs on that rollout (a copy of the policy; Adam restored from the
    checkpoint when it holds one)."""
    from recurrl.algo import ppo
    from recurrl.algo.device_rollout import is_device_env
    from recurrl.algo.optim import make_optimizer
    from recurrl.algo.returns import RewardScaler
    from recurrl.algo.rollout import Collector

    policy = copy.deepcopy(policy)
    ppo_config = config.ppo
    envs = make_vector_env(config.env)
    if is_device_env(envs):
        envs.close()
        raise ProbeError("probe's drift check needs host envs (not env.vectorization=torch)")
    try:
        scaler = (
            RewardScaler(envs.num_envs, ppo_config.gamma) if config.env.normalize_reward else None
        )
        collector = Collector(
            envs,
            policy,
            ppo_config.rollout_len,
            ppo_config.bptt_len,
            seed=seed,
            reward_scaler=scaler,
            env_id=config.env.id,
        )
        rollout = collector.collect()
    finally:
        envs.close()
    L, B = ppo_config.bptt_len, envs.num_envs
    stored = ppo.chunk_states_to_batch(rollout.chunk_states)
    same = relative_drift(stored, ppo.refresh_start_states(policy, rollout, L), B)
    advantages, returns = rollout.advantages(ppo_config.gamma, ppo_config.gae_lambda)
    optimizer = make_optimizer(policy, ppo_config)
    if payload.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError):
            pass  # a checkpoint from another optimizer layout: a fresh Adam
    for group in optimizer.param_groups:
        group["lr"] = ppo_config.learning_rate
    one_epoch = replace(ppo_config, update_epochs=1, target_kl=None, refresh_states=False)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = []
    policy.train()
    for _ in range(epochs):
        ppo.update(policy, optimizer, rollout, advantages, returns, one_epoch, generator)
        per_epoch.append(relative_drift(stored, ppo.refresh_start_states(policy, rollout, L), B))
    return {
        "rollout_len": ppo_config.rollout_len,
        "bptt_len": L,
        "num_envs": B,
        "same_parameters": same,
        "after_epochs": per_epoch,
    }


# --- the command -------------------------------------------------------------------------------


def probe_run(
    run: str | Path,
    episodes: int = 8,
    lags: int | None = None,
    epochs: int = 4,
    out: str | Path | None = None,
    seed: int = 0,
    num_envs: int = 8,
    state_episodes: int = STATE_EPISODES,
) -> dict:
    """Probe a run folder (or checkpoint); write ``summary.json`` (+ PNGs); return the summary.

    The state probe plays ``state_episodes`` greedy episodes of its own (0: no state probe);
    it is skipped, with the reason under ``state_probe["skipped"]``, for an env whose ``info``
    has no ``memory_target``.
    """
    from recurrl.config import config_from_dict
    from recurrl.run.checkpoints import (
        check_spaces,
        load_checkpoint,
        policy_from_checkpoint,
        resolve_checkpoint_path,
    )

    if lags is not None and lags <= 0:
        raise ProbeError(f"--lags must be a positive integer, got {lags}")
    if episodes <= 0 or epochs < 0 or state_episodes < 0:
        raise ProbeError("--episodes must be positive, --epochs and --state-episodes at least 0")
    path = resolve_checkpoint_path(run)
    payload = load_checkpoint(path)
    env_config = config_from_dict(payload["config"]).env
    envs = make_vector_env(env_config, 1)
    try:
        has_memory = "memory_target" in envs.reset(seed=seed)[1]
    finally:
        envs.close()
    check_spaces(payload, envs.single_observation_space, envs.single_action_space, env_config.id)
    policy, config = policy_from_checkpoint(payload)
    torch.manual_seed(seed)
    steps = greedy_steps(policy, config.env, episodes, num_envs, seed)
    if lags is None:
        lags = max(1, min(DEFAULT_LAGS, longest_episode(steps["episode_start"]) - 1))
    curves = memory_horizon(policy, steps, lags)
    drift = state_drift(policy, config, payload, epochs, seed) if epochs > 0 else None
    if state_episodes == 0:
        memory: dict[str, Any] = {"skipped": "--state-episodes 0"}
    elif not has_memory:
        memory = {"skipped": f"{config.env.id} puts no memory_target in its info"}
    else:
        memory = probe_memory(policy, config.env, state_episodes, num_envs, seed)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = Path(out) if out is not None else run_dir / "probe"
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "checkpoint": str(path),
        "env_id": config.env.id,
        "core": config.policy.core,
        "episodes": episodes,
        "steps": int(steps["valid"].sum()),
        "horizon": {
            **curves,
            "threshold": THRESHOLD,
            "action_horizon": horizon_lag(curves["action"]),
            "value_horizon": horizon_lag(curves["value"]),
        },
        "drift": drift,
        "state_probe": memory,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["images"] = _plots(summary, out)
    return summary


def _plots(summary: dict, out: Path) -> list[str]:
    """``horizon.png`` (log y), ``drift.png`` and ``state_probe.png`` when matplotlib is
    installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    horizon = summary["horizon"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("action", "value"):
        points = [(k, v) for k, v in zip(horizon["lags"], horizon[name], strict=True) if v]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("lag k (steps back)")
    ax.set_ylabel("|d output(t) / d obs(t - k)|")
    ax.set_title(f"{summary['env_id']}: memory horizon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "horizon.png", dpi=100)
    plt.close(fig)
    written.append(str(out / "horizon.png"))
    drift = summary["drift"]
    if drift is not None and drift["after_epochs"] and None not in drift["after_epochs"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        values = [drift["same_parameters"], *drift["after_epochs"]]
        ax.plot(range(len(values)), values, marker="o")
        ax.set_xlabel("PPO epochs on the rollout")
        ax.set_ylabel("relative drift of chunk-start states")
        ax.set_title(f"{summary['env_id']}: stale start states")
        fig.tight_layout()
        fig.savefig(out / "drift.png", dpi=100)
        plt.close(fig)
        written.append(str(out / "drift.png"))
    memory = summary["state_probe"]
    if "accuracy" in memory:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, style, label in (
            ("accuracy", "o-", "linear probe (held out)"),
            ("chance", "--", "chance (majority class)"),
        ):
            values = [math.nan if v is None else v for v in memory[name]]  # gaps, no sample
            ax.plot(memory["ages"], values, style, label=label)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("steps since memory_target was shown (first age of the bucket)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{summary['env_id']}: decoding memory_target")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "state_probe.png", dpi=100)
        plt.close(fig)
        written.append(str(out / "state_probe.png"))
    return written


def _number(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"
    )


def format_summary(summary: dict) -> str:
    """The few lines ``recurrl probe`` prints."""
    horizon = summary["horizon"]
    lines = [f"{summary['env_id']} ({summary['core']} core), {summary['steps']} greedy steps"]
    shown = sorted({0, 1, 2, 4, 8, 16, 32, 64, len(horizon["lags"]) - 1})
    shown = [k for k in shown if k < len(horizon["lags"])]
    lines.append("lag      " + " ".join(f"{k:>8}" for k in shown))
    for name in ("action", "value"):
        lines.append(f"{name:<8} " + " ".join(f"{_number(horizon[name][k]):>8}" for k in shown))
    for name in ("action", "value"):
        h = horizon[f"{name}_horizon"]
        lines.append(
            f"{name} gradient: first below 1% of lag 0 at lag {h['first_below']}, "
            f"last at or above it at lag {h['last_above']}"
        )
    drift = summary["drift"]
    if drift is not None:
        epochs = ", ".join(_number(v) for v in drift["after_epochs"])
        lines.append(
            f"start-state drift: {_number(drift['same_parameters'])} with the same parameters; "
            f"after 1..{len(drift['after_epochs'])} PPO epochs: {epochs}"
        )
    lines += _format_state_probe(summary["state_probe"])
    for image in summary.get("images", []):
        lines.append(f"wrote {image}")
    return "\n".join(lines)


def _format_state_probe(memory: dict) -> list[str]:
    """The state probe's lines: what it read, then accuracy and chance at a few ages."""
    if "skipped" in memory:
        return [f"state probe: skipped ({memory['skipped']})"]
    lines = [
        f"state probe: linear decoding of memory_target from the {memory['features']}, "
        f"{memory['feature_size']} features; {memory['train_episodes']} training / "
        f"{memory['test_episodes']} held-out episodes"
    ]
    count = len(memory["ages"])
    shown = sorted({0, 1, 2, 4, 8, 16, count // 2, count - 1} & set(range(count)))
    labels = [
        str(memory["ages"][i])
        if memory["ages"][i] == memory["age_max"][i]
        else f"{memory['ages'][i]}-{memory['age_max'][i]}"
        for i in shown
    ]
    lines.append("age      " + " ".join(f"{label:>8}" for label in labels))
    for name in ("accuracy", "chance"):
        lines.append(f"{name:<8} " + " ".join(f"{_number(memory[name][i]):>8}" for i in shown))
    return lines
