"""The training loop: collect, advantages, update, evaluate, log, checkpoint.

``train(config)`` runs it; ``train(config, resume=payload)`` continues a stopped run from its
checkpoint (``recurrl.run.resume``: what is restored and when the result is exact);
``recurrl.PPO`` (``recurrl.run.agent``) is the object API on top. What watches the run
(console, ``metrics.jsonl``, W&B, TensorBoard, the user's) is a list of callbacks
(``recurrl.run.callbacks``). Checkpoint
files: ``recurrl.run.checkpoints``; the run folder: ``recurrl.run.run_dir``; a failure or a
signal: ``recurrl.run.failures`` (no completed update is ever lost).

Launched by ``torchrun``, every rank runs this loop on its own envs (``recurrl.algo.distributed``):
gradients are averaged, metrics pooled, and rank 0 logs and writes the checkpoints, which hold
every rank's random streams and collector / env state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from recurrl.algo import ppo
from recurrl.algo.device_rollout import DeviceCollector, DeviceRewardScaler, is_device_env
from recurrl.algo.distributed import World, auto_device, resolve_device, setup_world
from recurrl.algo.make_env import EnvSource, declares_prev_action, make_vector_env
from recurrl.algo.optim import make_optimizer
from recurrl.algo.returns import RewardScaler
from recurrl.algo.rollout import Collector, Rollout
from recurrl.config import Config, ConfigError, to_dict
from recurrl.errors import (
    CheckpointWriteError,
    DivergenceError,
    EnvStepError,
    NonFiniteError,
    PeerFailure,
    TrainingError,
)
from recurrl.policy import ActorCritic
from recurrl.policy.actor_critic import resolve_sizes
from recurrl.run.callbacks import Callback, CallbackList, RunInfo, TrainResult
from recurrl.run.checkpoints import RunCheckpoints
from recurrl.run.failures import (
    GracefulStop,
    Rollback,
    close_quietly,
    crash_message,
    failure_outcome,
    stopped_message,
)
from recurrl.run.periodic_eval import PeriodicEval, eval_source
from recurrl.run.resume import anneal_start, env_state, restore_run, rng_state, set_rng_state
from recurrl.run.run_dir import open_run
from recurrl.run.tracking import make_sinks, pooled_metrics, require_tensorboard


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """``run.precision`` for the block: ``tf32`` lets float32 matrix products and the cells'
    recurrent products (cuDNN, the Triton kernels) run in TF32 on GPUs that have it; ``fp32``
    keeps them in full float32. torch's own flags are restored afterwards (a Python caller's
    settings are theirs)."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


class Trainer:
    """Owns the envs, policy, optimizer and run folder of one training run (one rank's part).

    Args:
        config: the resolved config (the same on every rank).
        quiet: no console progress.
        resume: a checkpoint payload (with its ``training`` state) to continue from; with
            several ranks, every rank passes it.
        world: the ranks of a data-parallel run; default: torchrun's, if it launched this
            process (``recurrl.algo.distributed.setup_world``), else a single process.
        env: the env passed from Python instead of ``env.id`` (``make_vector_env``); a
            ``VectorEnv`` is used as is and left open.
        eval_env: what evaluation envs are made from (an id or factory); default ``env`` (or
            ``env.id`` for a ``VectorEnv`` passed with a registered id).
        callbacks: called before the sinks (``recurrl.run.callbacks``), on every rank.
    """

    def __init__(
        self,
        config: Config,
        quiet: bool = False,
        resume: dict | None = None,
        world: World | None = None,
        env: EnvSource | None = None,
        eval_env: EnvSource | None = None,
        callbacks: list[Callback] = (),
    ) -> None:
        self.config, self.user_callbacks = config, list(callbacks)
        self.owns_envs = not isinstance(env, gym.vector.VectorEnv)
        self.eval_env = eval_source(config, env, eval_env)
        self.world = world if world is not None else setup_world()
        self.steps_per_update = config.batch_size * self.world.size  # env steps, all ranks
        if config.tracking.tensorboard:
            require_tensorboard()  # refuse before anything starts (on every rank alike)
        if config.run.torch_threads:
            torch.set_num_threads(config.run.torch_threads)
        device_envs = config.env.vectorization == "torch"
        self.device = resolve_device(config.device, self.world, config.env.num_envs, device_envs)
        self.device_reason = ""
        if config.device == "auto":
            self.device_reason = auto_device(config.env.num_envs, device_envs, self.world)[1]
        self.evaluation = PeriodicEval(config, self.world, self.device, self.eval_env)
        self.generator = seed_everything(self.world.seed(config.seed))
        self.envs = make_vector_env(config.env, env=env, device=self.device)
        if config.policy.prev_action == "auto":  # recorded resolved in config.yaml and checkpoints
            config.policy.prev_action = declares_prev_action(self.envs)
        try:
            sizes = resolve_sizes(config.policy, self.envs.single_observation_space)  # likewise
            config.policy.encoder_sizes = sizes.encoder_sizes
            config.policy.hidden_size = sizes.hidden_size
            self._build(quiet or not self.world.is_main, resume)
        except BaseException:
            if self.owns_envs:
                self.envs.close()
            raise

    def _collector(self, seed: int) -> Collector | DeviceCollector:
        """The rollout collector for the envs: on the device for a device-resident env."""
        config, ppo = self.config, self.config.ppo
        if is_device_env(self.envs):
            if config.env.skip_nonfinite:
                raise ConfigError(
                    "env.skip_nonfinite is not supported with env.vectorization=torch"
                )
            scaler = None
            if config.env.normalize_reward:
                scaler = DeviceRewardScaler(self.envs.num_envs, ppo.gamma, self.device)
            return DeviceCollector(
                self.envs,
                self.policy,
                ppo.rollout_len,
                ppo.bptt_len,
                seed=seed,
                reward_scaler=scaler,
                env_id=config.env.id,
                world=self.world,
                capture=config.run.cuda_graphs and self.device.type == "cuda",
            )
        reward_scaler = None
        if config.env.normalize_reward:
            reward_scaler = RewardScaler(self.envs.num_envs, ppo.gamma)
        return Collector(
            self.envs,
            self.policy,
            ppo.rollout_len,
            ppo.bptt_len,
            seed=seed,
            reward_scaler=reward_scaler,
            env_id=config.env.id,
            skip_nonfinite=config.env.skip_nonfinite,
            world=self.world,
        )

    def _build(self, quiet: bool, resume: dict | None) -> None:
        config, world = self.config, self.world
        self.policy = ActorCritic(
            self.envs.single_observation_space,
            self.envs.single_action_space,
            config.policy,
            normalize_obs=config.env.normalize_obs,
        ).to(self.device)
        self.optimizer = make_optimizer(self.policy, config.ppo)
        start = 0 if resume is None else resume["global_step"]
        self.collector = self._collector(world.seed(config.seed + start))
        self.update, self.global_step, self.last_checkpoint = 0, 0, 0
        self.best_eval_return, self.time_offset = -math.inf, 0.0
        self.anneal_from = (0, config.ppo.learning_rate)  # (step, rate): see anneal_start
        own = self._restore(resume) if resume is not None else None
        world.broadcast_module(self.policy)  # ranks seed apart: start from rank 0's parameters
        self.run_dir, self.history = open_run(config, world, resume)
        self.wandb_id = resume["training"].get("wandb_id") if resume is not None else None
        sinks = make_sinks(config, self.run_dir, quiet, self.wandb_id) if world.is_main else []
        self.wandb_id = next((s.wandb_id for s in sinks if hasattr(s, "wandb_id")), self.wandb_id)
        self.callbacks = CallbackList(self.user_callbacks + sinks)
        self.checkpoints = RunCheckpoints(
            self.run_dir / "checkpoints",
            world,
            self.policy,
            self.optimizer,
            to_dict(config),
            self.callbacks,
            config.run.keep_checkpoints,
            held_steps={"latest.pt": start} if resume is not None else None,
        )
        if own is not None:
            set_rng_state(own["rng"], self.generator)  # last: nothing may draw after it
        elif resume is not None:  # a rank the checkpoint has no state for
            self.generator = seed_everything(world.seed(config.seed + start))
        self.stop, self.stop_signal, self.stopped_by = GracefulStop(), None, None
        self.consistent = True  # False while an update is half done
        self.rollback: Rollback | None = None
        self.started = time.perf_counter()

    def _restore(self, payload: dict) -> dict | None:
        """Load the checkpoint (``recurrl.run.resume.restore_run``) and its counters.

        Returns:
            This rank's saved random streams and collector / env state, or None.
        """
        own = restore_run(
            payload,
            self.policy,
            self.optimizer,
            self.collector,
            self.envs,
            self.world,
            self.config.env.id,
        )
        training = payload["training"]
        self.global_step, self.update = payload["global_step"], training["update"]
        self.best_eval_return = training["best_eval_return"]
        self.last_checkpoint, self.time_offset = training["last_checkpoint"], training["time_s"]
        self.anneal_from = anneal_start(payload, self.config)
        return own

    def train_one_update(self, update: int) -> dict:
        """One iteration: rollout -> GAE -> PPO update -> metrics (pooled over the ranks)."""
        config, started = self.config, time.perf_counter()
        learning_rate = ppo.learning_rate_at(config.ppo, self.global_step, self.anneal_from)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        rollout = self.collect()
        self._synchronize()
        collected = time.perf_counter()
        advantages, returns = rollout.advantages(config.ppo.gamma, config.ppo.gae_lambda)
        self.policy.train()
        clip_coef = ppo.clip_coef_at(config.ppo, self.global_step)
        stats = ppo.update(
            self.policy,
            self.optimizer,
            rollout,
            advantages,
            returns,
            dataclasses.replace(config.ppo, clip_coef=clip_coef),
            self.generator,
            self.world,
        )
        if self.policy.obs_normalizer is not None:
            # After the update, so the rollout and its update saw the same statistics.
            with self.world.synced_statistics(self.policy.obs_normalizer):
                self.policy.obs_normalizer.update(rollout.obs[rollout.valid.bool()])
        self.global_step += self.steps_per_update
        self._synchronize()
        finished = time.perf_counter()
        metrics = self.update_metrics(update, rollout, stats, learning_rate, finished - started)
        metrics["rollout_s"], metrics["update_s"] = collected - started, finished - collected
        return metrics

    def _synchronize(self) -> None:
        """Wait for the GPU's queued work, so that the time split is what it says (once per
        rollout and once per update: nothing measurable)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def collect(self) -> Rollout:
        """This rank's rollout; if any rank's envs failed, every rank raises (and checkpoints).

        Raises:
            EnvStepError, NonFiniteError: this rank's envs failed.
            PeerFailure: another rank's envs failed.
        """
        self.policy.eval()
        failure, rollout = None, None
        try:
            rollout = self.collector.collect(self.global_step)
        except (EnvStepError, NonFiniteError) as error:
            failure = error
        failed = self.world.ranks_where(failure is not None)
        if failed:
            raise failure or PeerFailure(f"the envs of rank {failed[0]} failed (see its message)")
        return rollout

    def update_metrics(
        self, update: int, rollout: Rollout, stats: dict, learning_rate: float, elapsed: float
    ) -> dict:
        """One update's metrics: episodes pooled over the ranks, losses averaged."""
        local = {
            "returns": rollout.episode_returns,
            "lengths": rollout.episode_lengths,
            "skipped": rollout.nonfinite_steps,
            "stats": stats,
        }
        pooled = pooled_metrics(self.world.all_gather(local), self.config.env.skip_nonfinite)
        return {
            "global_step": self.global_step,
            "update": update,
            **pooled,
            "learning_rate": learning_rate,
            "sps": self.steps_per_update / elapsed,
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

    def rank_state(self) -> dict:
        """This rank's random streams and live collector / env state (``recurrl.run.resume``)."""
        return {
            "rng": rng_state(self.generator),
            "collector": self.collector.state_dict(),
            "envs": env_state(self.envs),
        }

    def counters(self) -> dict:
        """The loop's counters a checkpoint holds (``recurrl.run.resume``)."""
        return {
            "update": self.update,
            "time_s": self.elapsed(),
            "last_checkpoint": self.last_checkpoint,
            "best_eval_return": self.best_eval_return,
            "wandb_id": self.wandb_id,
            "anneal_from": self.anneal_from,
        }

    def save(
        self,
        name: str,
        aliases: list[str] | None = None,
        stamped: bool = False,
        rank_state: dict | None = None,
    ) -> Path | None:
        """Write ``checkpoints/<name>`` now (:meth:`RunCheckpoints.save`); ``rank_state``
        defaults to the live one."""
        state = rank_state if rank_state is not None else self.rank_state()
        step, counters = self.global_step, self.counters()
        return self.checkpoints.save(name, step, counters, state, aliases, stamped)

    def elapsed(self) -> float:
        """Training wall-clock seconds, counting the time before a resume."""
        return time.perf_counter() - self.started

    def stop_requested(self) -> bool:
        """Whether a SIGINT / SIGTERM reached any rank (all ranks stop after the same update)."""
        self.stop_signal = self.world.max(self.stop.signum or 0) or None
        return self.stop_signal is not None

    def run(self) -> TrainResult:
        """Train for ``ppo.total_steps`` (rounded up to whole updates), until a callback stops
        it, or until a SIGINT/SIGTERM (then checkpoint)."""
        num_updates = math.ceil(self.config.ppo.total_steps / self.steps_per_update)
        self.started = time.perf_counter() - self.time_offset
        result = None
        try:
            self.callbacks.on_start(RunInfo.of(self, num_updates * self.steps_per_update))
            with self.stop.installed(), matmul_precision(self.config.run.precision):
                while (
                    self.update < num_updates and not self.stopped_by and not self.stop_requested()
                ):
                    self.rollback = Rollback(self.policy, self.optimizer, self.rank_state())
                    self.consistent = False
                    metrics = self.train_one_update(self.update + 1)  # collect, GAE, PPO update
                    self.update, self.consistent = self.update + 1, True
                    evaluation = self.evaluation.metrics_if_due(
                        self.policy,
                        self.global_step,
                        self.steps_per_update,
                        last=self.update >= num_updates,
                    )
                    metrics.update(evaluation, time_s=self.elapsed())
                    self.after_update(metrics, bool(evaluation))  # callbacks: log, stop?
                    self.checkpoint_if_due(metrics)
                interrupted = self.stop_signal if self.update < num_updates else None
                interrupted = None if self.stopped_by else interrupted
                self._finish(interrupted)
            result = TrainResult(
                self.run_dir,
                self.global_step,
                self.history,
                self.policy,
                interrupted,
                self.stopped_by,
            )
        except BaseException as error:
            self._report_failure(error)
            raise
        finally:
            try:
                self.callbacks.on_end(result)
            finally:
                if self.owns_envs:
                    close_quietly(self.envs)
        return result

    def after_update(self, metrics: dict, evaluated: bool) -> None:
        """Hand the update's metrics to the callbacks (which may add keys); keep them; stop
        when a callback on any rank asked to."""
        stopped_by = self.callbacks.after_update(metrics, evaluated)
        self.history.append(metrics)
        if self.world.max(int(stopped_by is not None)):
            self.stopped_by = stopped_by or "a callback on another rank"

    def _finish(self, interrupted: int | None) -> None:
        stopped = None if interrupted is None else [f"step-{self.global_step}"]
        path = self.save("latest.pt", stopped)
        if interrupted is None:
            self.save("final.pt", ["final"])
        elif self.world.is_main:
            total = self.config.ppo.total_steps
            message = stopped_message(self.global_step, total, path, self.run_dir)
            print(message, file=sys.stderr, flush=True)

    def _report_failure(self, error: BaseException) -> None:
        """Checkpoint the last completed update (rolled back if mid-update) and say so.

        A :class:`~recurrl.errors.TrainingError` gets what was saved as its ``outcome`` (the
        caller prints it); anything else (a crash, a second signal) is reported here.
        """
        saved = self._save_after_failure(error)
        if isinstance(error, DivergenceError):
            error.message += f" of update {self.update + 1} (after step {self.global_step:,})"
        if isinstance(error, TrainingError):
            rate = ppo.learning_rate_at(self.config.ppo, self.global_step, self.anneal_from)
            error.outcome = failure_outcome(error, self.world, self.run_dir, saved, rate)
        elif self.world.is_main:
            resumable = self.checkpoints.latest.is_file()
            message = crash_message(error, self.global_step, saved, self.run_dir, resumable)
            print(message, file=sys.stderr, flush=True)

    def _save_after_failure(self, error: BaseException) -> str:
        """Write ``latest.pt`` with the last completed update after ``error``; say what was saved.

        Mid-update the policy and optimizer are put back first (:class:`Rollback`) and the rank
        state from before the update is written, never half an update. With several ranks only
        a failure all ranks agree on (a TrainingError) can checkpoint, as every rank takes part;
        after any other the last checkpoint stays. A failed write is not retried.
        """
        path = self.checkpoints.latest
        if isinstance(error, CheckpointWriteError):
            return ""
        if self.world.active and not isinstance(error, TrainingError):
            return f"kept the last checkpoint {path}" if path.is_file() else "nothing was saved"
        try:
            if self.consistent:
                self.save("latest.pt")
            else:
                self.rollback.restore()
                self.save("latest.pt", rank_state=self.rollback.rank_state)
        except Exception as save_error:
            return f"could not save {path} ({type(save_error).__name__}: {save_error})"
        return f"saved {path} (global step {self.global_step:,})"


def train(
    config: Config,
    quiet: bool = False,
    resume: dict | None = None,
    world: World | None = None,
    **options,
) -> TrainResult:
    """Train a policy as ``config`` says; returns the run folder, history and policy.

    Args:
        config: the resolved config.
        quiet: no console progress.
        resume: a loaded checkpoint payload to continue from (``recurrl.run.resume``).
        world: the ranks of a data-parallel run (default: torchrun's, if it launched us).
        options: ``env``, ``eval_env``, ``callbacks`` (:class:`Trainer`).

    Raises:
        TrainingError: an env failed, the update diverged or a checkpoint could not be
            written; the message says where and what was saved.
    """
    return Trainer(config, quiet=quiet, resume=resume, world=world, **options).run()
