"""Stale start states: how far the stored chunk-start states are from what updated
parameters would reach.

One fresh rollout (sampled actions, as in training) is collected; its chunk-start states,
stored while acting, are compared with the ones :func:`recurrl.algo.ppo.refresh_start_states`
recomputes, first with the same parameters (drift 0), then after each of ``E`` PPO epochs of
updates on that rollout (a copy of the policy and a fresh Adam at the run's learning rate, one
epoch per :func:`recurrl.algo.ppo.update` call). The drift is the mean over chunks after the
first of ``|s_new - s_old| / |s_old|`` (each chunk's states flattened together): how far the
stored start states are from the ones the updated parameters would reach, what
``ppo.refresh_states`` corrects.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from recurrl.algo.make_env import make_vector_env
from recurrl.app.probe.errors import ProbeError
from recurrl.policy import ActorCritic


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

    policy = copy.deepcopy(policy)
    ppo_config = config.ppo
    rollout, B = _fresh_rollout(policy, config, seed)
    L = ppo_config.bptt_len
    stored = ppo.chunk_states_to_batch(rollout.chunk_states)
    same = relative_drift(stored, ppo.refresh_start_states(policy, rollout, L), B)
    advantages, returns = rollout.advantages(ppo_config.gamma, ppo_config.gae_lambda)
    optimizer = _checkpoint_optimizer(policy, ppo_config, payload)
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


def _fresh_rollout(policy: ActorCritic, config, seed: int):
    """One rollout of ``policy`` in fresh host envs of ``config.env`` (sampled actions, reward
    scaling as in training), and the number of envs."""
    from recurrl.algo.device_rollout import is_device_env
    from recurrl.algo.returns import RewardScaler
    from recurrl.algo.rollout import Collector

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
    return rollout, envs.num_envs


def _checkpoint_optimizer(policy: ActorCritic, ppo_config, payload: dict):
    """The run's optimizer for ``policy``, its state restored from the checkpoint ``payload``
    when it holds one of the same layout (else fresh), at the run's learning rate."""
    from recurrl.algo.optim import make_optimizer

    optimizer = make_optimizer(policy, ppo_config)
    if payload.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError):
            pass  # a checkpoint from another optimizer layout: a fresh Adam
    for group in optimizer.param_groups:
        group["lr"] = ppo_config.learning_rate
    return optimizer
