"""Resume: continuing a stopped run from its ``checkpoints/latest.pt``.

The command line's ``--resume RUN`` reads the checkpoint (:func:`resume_checkpoint`), applies
the overrides to its config (:func:`resume_config`), and the trainer loads it back
(:func:`restore_run`). A training checkpoint holds, besides the policy, the optimizer and the
resolved config (``recurrl.run.checkpoints``), a ``training`` dict of tensors and plain data
(so ``weights_only=True`` loading still works):

- ``update``, ``time_s``, ``last_checkpoint``, ``best_eval_return``, ``wandb_id``;
- ``anneal_from``: ``(step, rate)``, where the learning rate's line to 0 starts
  (:func:`anneal_start`);
- ``rng``: the torch (CPU and CUDA), numpy and Python global generators and the PPO minibatch
  generator;
- ``collector``: the :class:`~recurrl.algo.rollout.Collector`'s live state (current observation,
  recurrent state, ``episode_start``, pending resets, running episode returns and lengths,
  reward-scaler statistics);
- ``envs``: the vector env's own state when it implements :class:`StatefulVectorEnv`, else None;
- with several ranks, ``world_size`` and the other ranks' ``rng`` / ``collector`` / ``envs`` in
  ``other_ranks`` (rank 0's sit at the top level, as in a single-process checkpoint).

With a stateful vector env, a run stopped after any update and resumed on the same device
reproduces the uninterrupted run exactly (same parameters, same metrics). Other envs (e.g.
Gymnasium's ``SyncVectorEnv``) cannot hand over their state: they restart with a fresh reset
(seeded from ``seed`` and the step), the recurrent state and the running episode statistics
start anew, and the run goes on from there; everything else is restored.
"""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

from recurrl.algo.distributed import World
from recurrl.algo.ppo import learning_rate_at
from recurrl.algo.rollout import Collector
from recurrl.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    to_dict,
)
from recurrl.policy import ActorCritic
from recurrl.run.checkpoints import (
    CheckpointError,
    check_spaces,
    load_checkpoint,
    rank_state_of,
)

FIXED_ON_RESUME = ("seed", "env", "policy")
"""Config sections a resumed run must keep (its envs, spaces, architecture and RNG streams)."""


@runtime_checkable
class StatefulVectorEnv(Protocol):
    """A vector env whose whole state can be saved and restored (for exact resume).

    ``get_state()`` returns a dict of numpy arrays and plain data (numbers, strings, lists,
    tuples, dicts; e.g. ``np_random.bit_generator.state``) from which ``set_state`` restores
    every copy mid-episode, including the env's random generators.
    """

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


# --- plain data -----------------------------------------------------------------------------

_ARRAY = "__ndarray__"


def to_plain(value: Any) -> Any:
    """Numpy arrays and scalars inside ``value`` -> data ``torch.load(weights_only=True)`` reads."""
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tobytes(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_plain(item) for item in value)
    return value


def from_plain(value: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(value, dict):
        if _ARRAY in value:
            array = np.frombuffer(value[_ARRAY], dtype=np.dtype(value["dtype"]))
            return array.reshape(value["shape"]).copy()
        return {key: from_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(from_plain(item) for item in value)
    return value


# --- random generators and env state ---------------------------------------------------------


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream training draws from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": to_plain(np.random.get_state()),
        "python": random.getstate(),
        "minibatch": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore :func:`rng_state` (CUDA streams only when the same devices are there)."""
    torch.set_rng_state(state["torch"])
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == (torch.cuda.device_count())
    ):
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(from_plain(state["numpy"]))
    random.setstate(state["python"])
    generator.set_state(state["minibatch"])


def env_state(envs: Any) -> Any:
    """The vector env's state as plain data, or None when it does not offer one."""
    if isinstance(envs, StatefulVectorEnv):
        return to_plain(envs.get_state())
    return None


def restore_env_state(envs: Any, state: Any) -> bool:
    """Put ``envs`` back into a saved state; False when either side has none."""
    if state is None or not isinstance(envs, StatefulVectorEnv):
        return False
    envs.set_state(from_plain(state))
    return True


# --- resuming a run -------------------------------------------------------------------------


def resume_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(run folder, payload of its checkpoints/latest.pt)``; a ``.pt`` file is accepted too."""
    path = Path(run_dir)
    if path.is_file():
        checkpoint, run_dir = path, path.parent.parent
    else:
        checkpoint, run_dir = path / "checkpoints" / "latest.pt", path
        if not checkpoint.is_file():
            raise CheckpointError(f"{path}: no checkpoints/latest.pt to resume from")
    try:
        payload = load_checkpoint(checkpoint)
    except CheckpointError as error:
        others = sorted(p.name for p in checkpoint.parent.glob("*.pt") if p != checkpoint)
        if not others:
            raise
        hint = ", ".join(others)
        raise CheckpointError(
            f"{error}; other checkpoints in {checkpoint.parent}: {hint} (pass one to --resume)"
        ) from None
    if "training" not in payload:
        raise CheckpointError(f"{checkpoint}: holds no training state (not written by a run)")
    return run_dir, payload


def _flat(data: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}"))
    return flat


def resume_config(run_dir: Path, payload: dict[str, Any], overrides: list[str]) -> Config:
    """The checkpoint's config with ``overrides`` applied; ``run.dir`` is ``run_dir``.

    Raises:
        ConfigError: an override changes a :data:`FIXED_ON_RESUME` key or ``run.dir``, or the
            run has already finished its ``ppo.total_steps``.
    """
    data = copy.deepcopy(payload["config"])
    apply_overrides(data, list(overrides))
    if data.get("run", {}).get("dir") not in (None, str(run_dir), payload["config"]["run"]["dir"]):
        raise ConfigError(f"run.dir: a resumed run continues in {run_dir}")
    data.setdefault("run", {})["dir"] = str(run_dir)
    config = config_from_dict(data)
    stored, now = to_dict(config_from_dict(payload["config"])), to_dict(config)
    for section in FIXED_ON_RESUME:
        before, after = _flat(stored[section], section), _flat(now[section], section)
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                raise ConfigError(
                    f"{key}: cannot change when resuming (checkpoint: {before.get(key)!r}, "
                    f"now: {after.get(key)!r}); start a new run instead"
                )
    step = payload["global_step"]
    if step >= config.ppo.total_steps and (run_dir / "checkpoints" / "final.pt").is_file():
        raise ConfigError(
            f"ppo.total_steps: {run_dir} already trained {step:,} of {config.ppo.total_steps:,} "
            f"steps; pass ppo.total_steps=N with a larger N to train further"
        )
    if (
        config.ppo.anneal_lr
        and step < config.ppo.total_steps
        and anneal_start(payload, config)[1] <= 0
    ):
        raise ConfigError(
            f"ppo.learning_rate: the run's learning rate was annealed to 0 by step {step:,}, so "
            f"training on to {config.ppo.total_steps:,} steps would change nothing; pass "
            f"ppo.learning_rate=X too (annealed from X at step {step:,} to 0 at the new end), "
            f"or ppo.anneal_lr=false"
        )
    return config


def anneal_start(payload: dict[str, Any], config: Config) -> tuple[int, float]:
    """``(step, rate)`` where a resumed run's learning rate starts its line to 0 at
    ``ppo.total_steps`` (``recurrl.algo.ppo.learning_rate_at``).

    The checkpoint's own schedule while ``ppo.total_steps``, ``ppo.learning_rate`` and
    ``ppo.anneal_lr`` stay as they were (the uninterrupted run's rates, bit for bit). When one
    changed, the line starts at the resumed step: from the rate the run had there (so a larger
    ``total_steps`` stretches the rest of the schedule instead of jumping back up), or from the
    new ``ppo.learning_rate`` when that changed.
    """
    before = config_from_dict(payload["config"]).ppo
    stored = payload["training"].get("anneal_from", (0, before.learning_rate))
    stored = (int(stored[0]), float(stored[1]))
    now, step = config.ppo, payload["global_step"]
    fields = ("total_steps", "learning_rate", "anneal_lr")
    if all(getattr(now, name) == getattr(before, name) for name in fields):
        return stored
    if now.learning_rate != before.learning_rate:
        return step, now.learning_rate
    return step, learning_rate_at(before, step, stored)


def restore_run(
    payload: dict,
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    collector: Collector,
    envs: gym.vector.VectorEnv,
    world: World,
    env_id: str,
) -> dict | None:
    """Load a training checkpoint into a new run (this rank's part).

    Parameters and optimizer always; this rank's collector and envs when the checkpoint holds
    this rank's state and the env can take it (:class:`StatefulVectorEnv`), else the
    envs restart with a fresh reset (reward-scaling statistics kept).

    Returns:
        This rank's saved random streams and collector / env state, or None when the
        checkpoint was written by fewer ranks.

    Raises:
        CheckpointError: the checkpoint's spaces are not the env's.
    """
    check_spaces(payload, envs.single_observation_space, envs.single_action_space, f"env {env_id}")
    policy.load_state_dict(payload["policy"])
    optimizer.load_state_dict(payload["optimizer"])
    training = payload["training"]
    own = rank_state_of(training, world.rank)
    saved_ranks = training.get("world_size", 1)
    if saved_ranks != world.size and world.is_main:
        print(
            f"recurrl: the checkpoint holds the state of {saved_ranks} rank(s), this run has "
            f"{world.size}: ranks from {saved_ranks} on start with fresh envs",
            file=sys.stderr,
        )
    if own is not None and restore_env_state(envs, own["envs"]):
        collector.load_state_dict(own["collector"])
        return own
    scaler = own["collector"]["reward_scaler"] if own is not None else None
    if collector.reward_scaler is not None and scaler is not None:
        fresh = {**scaler, "discounted": [0.0] * envs.num_envs}  # episodes restart
        collector.reward_scaler.load_state_dict(fresh)
    if own is not None and world.is_main:
        print(
            f"recurrl: {env_id} cannot save its state (no get_state/set_state), so its envs "
            f"restart with a fresh reset and the recurrent state resets; the rest of the run "
            f"(parameters, optimizer, statistics, random streams) is restored",
            file=sys.stderr,
        )
    return own
