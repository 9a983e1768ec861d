"""``recurrl probe RUN_DIR``: what a trained recurrent policy remembers.

Three measurements on a run's final (or latest) checkpoint, each documented in its module:

- **Memory horizon** (:mod:`recurrl.app.probe.horizon`): the norm of the gradient of the action
  distribution's parameters and of the value at step ``t`` with respect to the observation at
  ``t - k``, over lags ``k`` inside the episode, on greedy episodes.
- **Stale start states** (:mod:`recurrl.app.probe.drift`): how far the chunk-start states
  stored in a fresh rollout are from the ones the parameters reach after each of a few PPO
  epochs on it.
- **State probe** (:mod:`recurrl.app.probe.state`): per age bucket, how well a linear classifier
  decodes the env's ``memory_target`` from the recurrent state, against chance.

:mod:`recurrl.app.probe.collect` plays the greedy episodes the first and third read;
:mod:`recurrl.app.probe.report` draws the plots and the printed lines.

Writes ``probe/summary.json`` and, with matplotlib, ``probe/horizon.png``, ``probe/drift.png``
and ``probe/state_probe.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recurrl.algo.make_env import make_vector_env
from recurrl.app.probe.collect import greedy_steps, longest_episode, probe_features
from recurrl.app.probe.drift import relative_drift, state_drift
from recurrl.app.probe.errors import ProbeError
from recurrl.app.probe.horizon import DEFAULT_LAGS, THRESHOLD, horizon_lag, memory_horizon
from recurrl.app.probe.report import format_summary, plots
from recurrl.app.probe.state import (
    EXACT_AGES,
    RIDGE,
    STATE_EPISODES,
    age_buckets,
    probe_accuracy,
    probe_memory,
    state_probe,
)
from recurrl.policy import ActorCritic

__all__ = [
    "DEFAULT_LAGS",
    "EXACT_AGES",
    "RIDGE",
    "STATE_EPISODES",
    "THRESHOLD",
    "ProbeError",
    "age_buckets",
    "format_summary",
    "greedy_steps",
    "horizon_lag",
    "longest_episode",
    "memory_horizon",
    "probe_accuracy",
    "probe_features",
    "probe_memory",
    "probe_run",
    "relative_drift",
    "state_drift",
    "state_probe",
]


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

    _check_arguments(episodes, lags, epochs, state_episodes)
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
    memory = _state_probe_or_skip(policy, config, state_episodes, has_memory, num_envs, seed)
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
    summary["images"] = plots(summary, out)
    return summary


def _check_arguments(episodes: int, lags: int | None, epochs: int, state_episodes: int) -> None:
    """Refuse a non-positive ``lags`` or ``episodes``, a negative ``epochs`` or
    ``state_episodes``."""
    if lags is not None and lags <= 0:
        raise ProbeError(f"--lags must be a positive integer, got {lags}")
    if episodes <= 0 or epochs < 0 or state_episodes < 0:
        raise ProbeError("--episodes must be positive, --epochs and --state-episodes at least 0")


def _state_probe_or_skip(
    policy: ActorCritic, config, state_episodes: int, has_memory: bool, num_envs: int, seed: int
) -> dict[str, Any]:
    """The state probe's summary entry: :func:`probe_memory`'s result, or why it was skipped."""
    if state_episodes == 0:
        return {"skipped": "--state-episodes 0"}
    if not has_memory:
        return {"skipped": f"{config.env.id} puts no memory_target in its info"}
    return probe_memory(policy, config.env, state_episodes, num_envs, seed)
