"""Periodic evaluation during training (``eval.*``): full episodes on envs of their own."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from recurrl.algo.distributed import World
from recurrl.algo.evaluate import evaluate
from recurrl.algo.make_env import PASSED, EnvSource
from recurrl.config import Config, ConfigError
from recurrl.policy import ActorCritic


def eval_source(
    config: Config, env: EnvSource | None, eval_env: EnvSource | None
) -> EnvSource | None:
    """What evaluation envs are made from: ``eval_env``, else the training ``env`` (an id or
    factory; None: ``env.id``).

    Raises:
        ConfigError: evaluation is on, and the only env is a ``VectorEnv`` without an id (it
            cannot be copied).
    """
    source = eval_env if eval_env is not None else env
    if isinstance(source, gym.vector.VectorEnv):
        source = None  # made again from its registered id, if it has one
    if config.eval.every and source is None and config.env.id.startswith(PASSED):
        raise ConfigError(
            "eval.every: evaluation needs envs of its own, and a VectorEnv passed in cannot be "
            "copied; pass eval_env=FACTORY too, or set eval.every=0"
        )
    return source


class PeriodicEval:
    """``eval_*`` metrics every ``eval.every`` steps and after the last update.

    Rank 0 evaluates; every rank gets its results (so all agree on ``best.pt``).

    Args:
        config: the resolved config.
        world: the ranks.
        device: the policy's device.
        source: what the evaluation envs are made from (:func:`eval_source`).
    """

    def __init__(
        self, config: Config, world: World, device: torch.device, source: EnvSource | None
    ) -> None:
        self.config, self.world, self.device, self.source = config, world, device, source

    def metrics_if_due(
        self, policy: ActorCritic, global_step: int, steps_per_update: int, last: bool
    ) -> dict:
        """The metrics if an evaluation is due after the update that reached ``global_step``
        (``last``: the run's last update), else ``{}``."""
        every = self.config.eval.every
        previous = global_step - steps_per_update
        if not every or (global_step // every == previous // every and not last):
            return {}
        if not self.world.is_main:
            return self.world.broadcast({})
        deterministic = self.config.eval.deterministic
        metrics = self._evaluate(policy, "eval", deterministic)
        if self.config.eval.both_modes:
            other = "eval_stochastic" if deterministic else "eval_deterministic"
            metrics.update(self._evaluate(policy, other, not deterministic))
        return self.world.broadcast(metrics)

    def _evaluate(self, policy: ActorCritic, prefix: str, deterministic: bool) -> dict:
        settings = self.config.eval
        policy.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # training's random stream stays untouched
            returns = evaluate(
                policy,
                self.config.env,
                settings.episodes,
                deterministic,
                settings.seed,
                env=self.source,
            )
        return {
            f"{prefix}_return_mean": float(np.mean(returns)),
            f"{prefix}_return_std": float(np.std(returns)),
        }
