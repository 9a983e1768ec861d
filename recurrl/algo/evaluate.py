"""Evaluation: full episodes with the recurrent state carried and reset at episode start."""

from __future__ import annotations

import math

import numpy as np
import torch

from recurrl.algo.make_env import EnvSource, autoreset_is_next_step, make_vector_env
from recurrl.config import ConfigError, EnvConfig
from recurrl.policy import ActorCritic
from recurrl.policy.inputs import null_action
from recurrl.policy.tree import as_observation


@torch.inference_mode()
def evaluate(
    policy: ActorCritic,
    env_config: EnvConfig,
    episodes: int = 10,
    deterministic: bool = False,
    seed: int = 0,
    num_envs: int | None = None,
    env: EnvSource | None = None,
) -> list[float]:
    """Returns of ``episodes`` full episodes (on envs made from ``env_config``, or from ``env``,
    an id or factory passed from Python: ``recurrl.algo.make_env.make_vector_env``).

    Each env copy runs a fixed share of the episodes (counting only the first completions would
    favour short episodes). The state resets exactly where ``episode_start`` says, as in training.
    """
    num_envs = min(episodes, num_envs or 16)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    envs = make_vector_env(env_config, num_envs, env=env)
    try:
        next_step = autoreset_is_next_step(envs, env_config.id)
    except ConfigError:
        envs.close()
        raise
    device = next(policy.parameters()).device
    obs, _ = envs.reset(seed=seed)
    state = policy.initial_state(num_envs)
    episode_start = np.ones(num_envs, dtype=bool)
    prev_action = torch.as_tensor(null_action(policy.action_space, num_envs), device=device)
    prev_reward = torch.zeros(num_envs, dtype=policy.dtype, device=device)
    skip = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: the coming step only resets
    running = np.zeros(num_envs)
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    try:
        while any(len(r) < q for r, q in zip(returns, quota, strict=True)):
            starts = torch.as_tensor(episode_start, dtype=torch.float32, device=device)
            out = policy.step(
                as_observation(obs, device), state, starts, deterministic, prev_action, prev_reward
            )
            state = out.state
            action = policy.head.to_env(out.action.cpu().numpy())
            obs, reward, terminated, truncated, _ = envs.step(action)
            prev_action = torch.as_tensor(action, device=device)
            prev_reward = torch.as_tensor(reward, dtype=policy.dtype, device=device)
            running += np.where(skip, 0.0, reward)
            done = (terminated | truncated) & ~skip
            for i in np.flatnonzero(done):
                if len(returns[i]) < quota[i]:
                    returns[i].append(float(running[i]))
                running[i] = 0.0
            episode_start = skip.copy() if next_step else done
            skip = done if next_step else skip
    finally:
        envs.close()
    return [value for per_env in returns for value in per_env]


def format_return(value: float, digits: int = 4) -> str:
    """A return as the command line prints it: ``digits`` significant digits (and every digit
    before the point), no exponent, trailing zeros dropped.

    ``0.959`` stays ``0.959``, ``0.0191`` is ``0.0191``, ``500.0`` is ``500``, ``487.34`` is
    ``487.3`` and ``12345.6`` is ``12346``.
    """
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}".replace("-0", "0")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def format_mean_std(values: list[float]) -> str:
    """``mean ± std`` of ``values``, each with :func:`format_return`."""
    return f"{format_return(np.mean(values))} ± {format_return(np.std(values))}"
