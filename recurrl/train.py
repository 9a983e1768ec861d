"""The training loop: collect a rollout, estimate advantages, update, log, checkpoint."""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml

from recurrl import ppo
from recurrl.checkpoint import save_checkpoint
from recurrl.config import Config, ConfigError, to_dict
from recurrl.make_env import make_vector_env
from recurrl.policy import ActorCritic
from recurrl.rollout import Collector, RewardScaler, generalized_advantage_estimate
from recurrl.tracking import Tracker


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    run_dir: Path
    global_step: int
    history: list[dict]  # one metrics dict per update
    policy: ActorCritic


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} requested but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_run_dir(config: Config) -> Path:
    if config.run.dir:
        run_dir = Path(config.run.dir)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{config.name}-{stamp}"
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"run.dir: cannot create {run_dir}: {error.strerror}") from None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return run_dir


def learning_rate_at(config: Config, global_step: int) -> float:
    """Linear annealing to 0 over ``total_steps`` (constant if ``anneal_lr`` is off)."""
    if not config.ppo.anneal_lr:
        return config.ppo.learning_rate
    return config.ppo.learning_rate * max(0.0, 1.0 - global_step / config.ppo.total_steps)


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


class Trainer:
    """Owns the envs, policy, optimizer and run folder of one training run."""

    def __init__(self, config: Config, quiet: bool = False) -> None:
        self.config = config
        if config.run.torch_threads:
            torch.set_num_threads(config.run.torch_threads)
        self.device = resolve_device(config.device)
        self.generator = seed_everything(config.seed)
        self.envs = make_vector_env(config.env)
        self.policy = ActorCritic(
            self.envs.single_observation_space,
            self.envs.single_action_space,
            config.policy,
            normalize_obs=config.env.normalize_obs,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=config.ppo.learning_rate, eps=config.ppo.adam_eps
        )
        reward_scaler = None
        if config.env.normalize_reward:
            reward_scaler = RewardScaler(self.envs.num_envs, config.ppo.gamma)
        self.collector = Collector(
            self.envs,
            self.policy,
            config.ppo.rollout_len,
            config.ppo.bptt_len,
            seed=config.seed,
            reward_scaler=reward_scaler,
        )
        self.run_dir = make_run_dir(config)
        self.tracker = Tracker(
            self.run_dir,
            config.name,
            to_dict(config),
            config.tracking.wandb,
            config.ppo.total_steps,
            quiet,
        )
        self.global_step = 0
        self.history: list[dict] = []

    def train_one_update(self, update: int) -> dict:
        """One iteration: rollout -> GAE -> PPO update -> metrics."""
        config, started = self.config, time.perf_counter()
        learning_rate = learning_rate_at(config, self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.policy.eval()
        rollout = self.collector.collect()
        advantages, returns = generalized_advantage_estimate(
            rollout.rewards,
            rollout.values,
            rollout.next_values,
            rollout.terminated,
            rollout.truncated,
            config.ppo.gamma,
            config.ppo.gae_lambda,
        )
        self.policy.train()
        stats = ppo.update(
            self.policy, self.optimizer, rollout, advantages, returns, config.ppo, self.generator
        )
        if self.policy.obs_normalizer is not None:
            # After the update, so the rollout and its update saw the same statistics.
            self.policy.obs_normalizer.update(rollout.obs[rollout.valid.bool()])
        self.global_step += config.batch_size
        elapsed = time.perf_counter() - started
        return {
            "global_step": self.global_step,
            "update": update,
            "episodic_return": _mean(rollout.episode_returns),
            "episodic_length": _mean(rollout.episode_lengths),
            "episodes": len(rollout.episode_returns),
            **stats,
            "learning_rate": learning_rate,
            "sps": config.batch_size / elapsed,
        }

    def checkpoint(self, name: str) -> Path:
        return save_checkpoint(
            self.run_dir / "checkpoints" / name,
            self.policy,
            to_dict(self.config),
            self.global_step,
            self.optimizer,
        )

    def run(self) -> TrainResult:
        """Train for ``ppo.total_steps``; a crash or Ctrl-C still leaves ``latest.pt``."""
        config = self.config
        num_updates = math.ceil(config.ppo.total_steps / config.batch_size)
        last_checkpoint, started = 0, time.perf_counter()
        try:
            for update in range(1, num_updates + 1):
                metrics = self.train_one_update(update)
                metrics["time_s"] = time.perf_counter() - started
                self.history.append(metrics)
                self.tracker.log(metrics)
                if self.global_step - last_checkpoint >= config.run.checkpoint_every:
                    self.checkpoint("latest.pt")
                    last_checkpoint = self.global_step
        except BaseException:
            path = self.checkpoint("latest.pt")
            print(f"recurrl: stopped at step {self.global_step}; saved {path}", file=sys.stderr)
            raise
        finally:
            self.tracker.close()
            self.envs.close()
        self.checkpoint("latest.pt")
        self.checkpoint("final.pt")
        return TrainResult(self.run_dir, self.global_step, self.history, self.policy)


def train(config: Config, quiet: bool = False) -> TrainResult:
    """Train a policy as ``config`` says; returns the run folder, history and policy."""
    return Trainer(config, quiet=quiet).run()
