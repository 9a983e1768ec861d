"""The training loop: collect, advantages, update, evaluate, log, checkpoint.

``train(config)`` runs it; ``train(config, resume=payload)`` continues a stopped run from its
checkpoint (see ``recurrl.resume`` for what is restored and when the result is exact). The first
SIGINT or SIGTERM finishes the current update, writes ``checkpoints/latest.pt`` and stops.
"""

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
from recurrl.checkpoint import (
    check_spaces,
    checkpoint_payload,
    prune_checkpoints,
    write_checkpoint,
)
from recurrl.config import Config, ConfigError, to_dict
from recurrl.evaluate import evaluate
from recurrl.make_env import make_vector_env
from recurrl.policy import ActorCritic
from recurrl.resume import (
    GracefulStop,
    env_state,
    restore_env_state,
    rng_state,
    set_rng_state,
    truncate_metrics,
)
from recurrl.rollout import Collector, RewardScaler, generalized_advantage_estimate
from recurrl.tracking import Tracker, require_tensorboard


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    run_dir: Path
    global_step: int
    history: list[dict]  # one metrics dict per update (a resumed run's earlier ones too)
    policy: ActorCritic
    interrupted: int | None = None  # the signal that stopped the run early, if any


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
    """Owns the envs, policy, optimizer and run folder of one training run.

    Args:
        config: the resolved config.
        quiet: no console progress.
        resume: a checkpoint payload (with its ``training`` state) to continue from.
    """

    def __init__(self, config: Config, quiet: bool = False, resume: dict | None = None) -> None:
        self.config = config
        if config.tracking.tensorboard:
            require_tensorboard()  # refuse before anything starts
        if config.run.torch_threads:
            torch.set_num_threads(config.run.torch_threads)
        self.device = resolve_device(config.device)
        self.generator = seed_everything(config.seed)
        self.envs = make_vector_env(config.env)
        try:
            self._build(quiet, resume)
        except BaseException:
            self.envs.close()
            raise

    def _build(self, quiet: bool, resume: dict | None) -> None:
        config = self.config
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
            seed=config.seed if resume is None else config.seed + resume["global_step"],
            reward_scaler=reward_scaler,
        )
        self.update, self.global_step, self.last_checkpoint = 0, 0, 0
        self.best_eval_return, self.time_offset = -math.inf, 0.0
        training = self._restore(resume) if resume is not None else {}
        self.run_dir = make_run_dir(config)
        self.history = truncate_metrics(self.run_dir, self.global_step) if resume else []
        self.tracker = Tracker(
            self.run_dir,
            config.name,
            to_dict(config),
            config.tracking,
            config.ppo.total_steps,
            quiet,
            wandb_id=training.get("wandb_id"),
            start_step=self.global_step,
        )
        if training:
            set_rng_state(training["rng"], self.generator)  # last: nothing may draw after it
        self.stop = GracefulStop()
        self.consistent = True  # False while an update is half done
        self.started = time.perf_counter()

    def _restore(self, payload: dict) -> dict:
        """Load parameters, optimizer, counters, the collector and (if possible) the envs."""
        check_spaces(
            payload,
            self.envs.single_observation_space,
            self.envs.single_action_space,
            f"env {self.config.env.id}",
        )
        self.policy.load_state_dict(payload["policy"])
        self.optimizer.load_state_dict(payload["optimizer"])
        training = payload["training"]
        self.global_step, self.update = payload["global_step"], training["update"]
        self.best_eval_return = training["best_eval_return"]
        self.last_checkpoint, self.time_offset = training["last_checkpoint"], training["time_s"]
        if restore_env_state(self.envs, training["envs"]):
            self.collector.load_state_dict(training["collector"])
            return training
        scaler = training["collector"]["reward_scaler"]
        if self.collector.reward_scaler is not None and scaler is not None:
            fresh = {**scaler, "discounted": [0.0] * self.envs.num_envs}  # episodes restart
            self.collector.reward_scaler.load_state_dict(fresh)
        print(
            f"recurrl: {self.config.env.id} cannot save its state (no get_state/set_state), so "
            f"its envs restart with a fresh reset and the recurrent state resets; the rest of "
            f"the run (parameters, optimizer, statistics, random streams) is restored",
            file=sys.stderr,
        )
        return training

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

    def evaluate_if_due(self, num_updates: int) -> dict:
        """``eval_*`` metrics when ``eval.every`` steps have passed and after the last update."""
        every = self.config.eval.every
        previous = self.global_step - self.config.batch_size
        if not every or (
            self.global_step // every == previous // every and self.update < num_updates
        ):
            return {}
        deterministic = self.config.eval.deterministic
        metrics = self._evaluate("eval", deterministic)
        if self.config.eval.both_modes:
            other = "eval_stochastic" if deterministic else "eval_deterministic"
            metrics.update(self._evaluate(other, not deterministic))
        return metrics

    def _evaluate(self, prefix: str, deterministic: bool) -> dict:
        settings = self.config.eval
        self.policy.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # training's random stream stays untouched
            returns = evaluate(
                self.policy, self.config.env, settings.episodes, deterministic, settings.seed
            )
        return {
            f"{prefix}_return_mean": float(np.mean(returns)),
            f"{prefix}_return_std": float(np.std(returns)),
        }

    def checkpoint_if_due(self, metrics: dict) -> None:
        """``best.pt`` on a new best evaluation; ``latest.pt`` every ``run.checkpoint_every``."""
        eval_return = metrics.get("eval_return_mean")
        if eval_return is not None and eval_return > self.best_eval_return:
            self.best_eval_return = eval_return
            self.save("best.pt", ["best"])
        if self.global_step - self.last_checkpoint >= self.config.run.checkpoint_every:
            self.last_checkpoint = self.global_step
            self.save("latest.pt", [f"step-{self.global_step}"], stamped=True)

    def training_state(self) -> dict:
        """What exact resume needs beyond parameters and optimizer (see ``recurrl.resume``)."""
        return {
            "update": self.update,
            "time_s": self.elapsed(),
            "last_checkpoint": self.last_checkpoint,
            "best_eval_return": self.best_eval_return,
            "wandb_id": self.tracker.wandb_id,
            "rng": rng_state(self.generator),
            "collector": self.collector.state_dict(),
            "envs": env_state(self.envs),
        }

    def save(self, name: str, aliases: list[str] | None = None, stamped: bool = False) -> Path:
        """Write ``checkpoints/<name>`` (and a step-stamped copy if ``run.keep_checkpoints``).

        With ``aliases``, also upload it to W&B (when ``tracking.wandb.log_checkpoints``); W&B
        itself adds ``latest`` to the newest version.
        """
        payload = checkpoint_payload(
            self.policy,
            to_dict(self.config),
            self.global_step,
            self.optimizer,
            {"training": self.training_state()},
        )
        directory = self.run_dir / "checkpoints"
        path = write_checkpoint(directory / name, payload)
        if aliases is not None:
            self.tracker.log_checkpoint(path, aliases, self.global_step)
        keep = self.config.run.keep_checkpoints
        if stamped and keep:
            write_checkpoint(directory / f"step-{self.global_step:012d}.pt", payload)
            prune_checkpoints(directory, keep)
        return path

    def elapsed(self) -> float:
        """Training wall-clock seconds, counting the time before a resume."""
        return time.perf_counter() - self.started

    def run(self) -> TrainResult:
        """Train for ``ppo.total_steps`` (or until a SIGINT/SIGTERM, then checkpoint)."""
        num_updates = math.ceil(self.config.ppo.total_steps / self.config.batch_size)
        self.started = time.perf_counter() - self.time_offset
        try:
            with self.stop.installed():
                while self.update < num_updates and not self.stop.requested:
                    self.consistent = False
                    metrics = self.train_one_update(self.update + 1)  # collect, GAE, PPO update
                    self.update, self.consistent = self.update + 1, True
                    metrics.update(self.evaluate_if_due(num_updates))
                    metrics["time_s"] = self.elapsed()
                    self.history.append(metrics)
                    self.tracker.log(metrics)
                    self.checkpoint_if_due(metrics)
                interrupted = self.stop.signum if self.update < num_updates else None
                self._finish(interrupted)
        except BaseException as error:
            self._report_failure(error)
            raise
        finally:
            self.tracker.close()
            self.envs.close()
        return TrainResult(
            self.run_dir, self.global_step, self.history, self.policy, interrupted=interrupted
        )

    def _finish(self, interrupted: int | None) -> None:
        stopped = None if interrupted is None else [f"step-{self.global_step}"]
        path = self.save("latest.pt", stopped)
        if interrupted is None:
            self.save("final.pt", ["final"])
            return
        print(
            f"recurrl: stopped at step {self.global_step:,} of {self.config.ppo.total_steps:,}; "
            f"saved {path}\nrecurrl: resume with: recurrl train --resume {self.run_dir}",
            file=sys.stderr,
            flush=True,
        )

    def _report_failure(self, error: BaseException) -> None:
        """A crash or a second signal: checkpoint only a consistent state, never a half update."""
        path = self.run_dir / "checkpoints" / "latest.pt"
        if self.consistent:
            try:
                self.save("latest.pt")
                saved = f"saved {path}"
            except Exception as save_error:
                saved = f"could not save {path} ({type(save_error).__name__})"
        elif path.is_file():
            saved = f"mid-update, so the last checkpoint {path} was kept"
        else:
            saved = "mid-update, before any checkpoint was written"
        resume = f"; resume with: recurrl train --resume {self.run_dir}" if path.is_file() else ""
        print(
            f"recurrl: stopped at step {self.global_step:,} ({type(error).__name__}); {saved}"
            f"{resume}",
            file=sys.stderr,
            flush=True,
        )


def train(config: Config, quiet: bool = False, resume: dict | None = None) -> TrainResult:
    """Train a policy as ``config`` says; returns the run folder, history and policy.

    Args:
        config: the resolved config.
        quiet: no console progress.
        resume: a loaded checkpoint payload to continue from (``recurrl.resume``).
    """
    return Trainer(config, quiet=quiet, resume=resume).run()
