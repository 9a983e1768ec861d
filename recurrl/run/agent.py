"""``recurrl.PPO``: recurrent PPO as an object, on a registered id or the user's own env.

::

    model = recurrl.PPO(MyEnv, policy={"core": "gru"}, ppo={"total_steps": 50_000})
    model.learn(callbacks=[recurrl.StopOnReturn(0.9)])
    action, state = model.predict(obs, state=None, episode_start=True)

The config is the YAML experiment's, built the same way and validated by the same code
(:func:`recurrl.config.config_from_dict`): keyword sections (``env={...}``, ``ppo={...}``, ...),
a YAML path or :class:`~recurrl.config.Config` as ``config``, and ``dotted.key=value``
``overrides`` on top. ``recurrl train`` is this object (``recurrl.app.cli``). ``learn`` runs
the trainer (``recurrl.run.train``): the run folder, checkpoints, W&B, TensorBoard, periodic
evaluation are all there, set by the same keys.

``env`` may be an id, a factory of single envs (an ``Env`` class or a function: copies are
vectorised by Gymnasium's ``SyncVectorEnv``) or a ``VectorEnv`` (used as is). The config
records ``env.id`` as the id, a ``VectorEnv``'s registered id, or ``<callable module:Name>``;
checkpoints hold the spaces, so ``recurrl.load_policy`` and ``PPO.load`` work without the env.
A factory importable by that name (a class or function at the top of a module) is imported
again where envs are needed (``recurrl eval``, continuing the run); any other is passed again:
``PPO.load(run_dir, env=make_env).learn()``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from recurrl.algo.make_env import EnvSource, describe_env
from recurrl.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    read_yaml,
    to_dict,
)
from recurrl.run.callbacks import Callback
from recurrl.run.checkpoints import (
    CheckpointError,
    load_checkpoint,
    policy_from_checkpoint,
    save_checkpoint,
)
from recurrl.run.resume import resume_checkpoint, resume_config
from recurrl.run.train import TrainResult, train


def build_config(
    config: Config | dict | str | Path | None = None,
    overrides: list[str] = (),
    sections: dict[str, Any] | None = None,
) -> Config:
    """One config from a base (a YAML path, a dict or a :class:`Config`), keyword sections
    merged in key by key, then ``dotted.key=value`` overrides; validated as a YAML file is.

    Raises:
        ConfigError: naming the dotted key, with the same message as the YAML path.
    """
    if isinstance(config, Config):
        data = to_dict(config)
    elif isinstance(config, dict):
        data = copy.deepcopy(config)
    else:
        data = read_yaml(config) if config is not None else {}
    for key, value in (sections or {}).items():
        _merge(data, key, value)  # an unknown key is refused below, as in a YAML file
    apply_overrides(data, list(overrides))
    return config_from_dict(data)


def _merge(data: dict, key: str, value: Any) -> None:
    """``data[key] = value``, mappings merged key by key (``ppo={"bptt_len": 8}`` keeps the
    base's other ``ppo`` keys)."""
    if isinstance(value, dict) and isinstance(data.get(key), dict):
        for inner, item in value.items():
            _merge(data[key], inner, item)
    else:
        data[key] = copy.deepcopy(value)


class PPO:
    """Recurrent PPO (TBPTT) on one env: train with :meth:`learn`, act with :meth:`predict`.

    Args:
        env: an id, an env factory (``Env`` class or function; called with ``env.kwargs``) or
            a ``gymnasium.vector.VectorEnv`` with ``env.num_envs`` envs (used as is, left
            open); or the ``env`` section as a dict whose ``id`` is one of these
            (``{"id": MyEnv, "num_envs": 16}``). None: ``env.id`` of the config.
        config: a base config: a YAML path, a dict of keys, or a :class:`Config`.
        overrides: ``dotted.key=value`` strings applied last (as on the command line).
        eval_env: what periodic evaluation (``eval.every``) makes its envs from; default
            ``env`` (a ``VectorEnv`` cannot be copied: then pass a factory).
        callbacks: called in every :meth:`learn` (``recurrl.run.callbacks``).
        quiet: no console banner and progress.
        summary: after :meth:`learn`, print a summary with a final evaluation of this many
            episodes (0: the summary without it; None: no summary).
        resume: a checkpoint payload to continue from with ``config`` as resolved by
            :func:`recurrl.run.resume.resume_config` (what ``recurrl train --resume`` does;
            from Python use :meth:`load`).
        world: the ranks of a data-parallel run (default: torchrun's, if it launched this).
        **sections: config sections as keywords: ``policy``, ``ppo``, ``run``, ``eval``,
            ``tracking`` (dicts), ``name``, ``seed``, ``device``.

    Raises:
        ConfigError: a bad key or value (naming it), or an env that is not one.
    """

    def __init__(
        self,
        env: EnvSource | dict | None = None,
        config: Config | dict | str | Path | None = None,
        *,
        overrides: list[str] = (),
        eval_env: EnvSource | None = None,
        callbacks: list[Callback] = (),
        quiet: bool = False,
        summary: int | None = None,
        resume: dict | None = None,
        world: Any = None,
        **sections: Any,
    ) -> None:
        if isinstance(env, dict):
            sections["env"], env = dict(env), env.get("id")
        if env is not None:
            sections["env"] = {**sections.get("env", {}), "id": describe_env(env)}
        self.config = build_config(config, list(overrides), sections)
        self.env = None if isinstance(env, str) else env
        self.eval_env, self.callbacks = eval_env, list(callbacks)
        self.quiet, self.summary, self.world = quiet, summary, world
        self.result: TrainResult | None = None
        self.policy = None
        self.run_dir = Path(self.config.run.dir) if resume is not None else None
        self._resume = resume  # continue from it with self.config as is
        self._continue: tuple[list[str], dict | None] | None = None  # (overrides, payload)
        self._policy_only: Path | None = None  # loaded from a file without training state

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: EnvSource | None = None,
        *,
        overrides: list[str] = (),
        **options: Any,
    ) -> PPO:
        """A model from a run folder (its ``checkpoints/latest.pt``) or a checkpoint file.

        :meth:`predict` works at once; :meth:`learn` continues the run (a run folder or a file
        in one) with ``overrides`` applied (``resume_config``: ``env``, ``policy`` and ``seed``
        stay). An env passed from Python must be passed again to continue (the same factory
        or ``VectorEnv`` class). ``options``: those of :class:`PPO` (``eval_env``,
        ``callbacks``, ``quiet``, ...).
        """
        path = Path(path)
        run_dir, payload = (
            resume_checkpoint(path) if path.is_dir() else (None, load_checkpoint(path))
        )
        if run_dir is None and path.parent.name == "checkpoints" and "training" in payload:
            run_dir = path.parent.parent
        stored = payload["config"]["env"]["id"]
        if env is not None and describe_env(env) != stored:
            raise ConfigError(
                f"env.id: cannot change when resuming (checkpoint: {stored!r}, now: "
                f"{describe_env(env)!r}); start a new run instead"
            )
        data = copy.deepcopy(payload["config"])
        if run_dir is not None:
            data["run"]["dir"] = str(run_dir)
        model = cls(None, data, **options)
        model.env = None if isinstance(env, str) else env
        model.policy = policy_from_checkpoint(payload)[0]
        model.run_dir = run_dir
        if run_dir is not None:
            model._continue = (list(overrides), payload)
        else:
            model._policy_only = path
        return model

    def learn(self, total_steps: int | None = None, callbacks: list[Callback] = ()) -> PPO:
        """Train until ``total_steps`` env steps in all (default ``ppo.total_steps``), or until
        a callback stops it; called again (with a larger ``total_steps``), the run goes on
        from its ``latest.pt``.

        Returns:
            self (``self.result`` holds the :class:`~recurrl.run.train.TrainResult`).

        Raises:
            ConfigError: a bad ``total_steps``, or a run that already reached it.
            TrainingError: the env failed or the update diverged (see its message).
        """
        if self._policy_only is not None:
            raise CheckpointError(
                f"{self._policy_only} holds a policy without training state; continue a run "
                f"from its folder (PPO.load(RUN_DIR)), or start a new one"
            )
        config, resume = self._next_run(total_steps)
        sinks = []
        if self.summary is not None:
            from recurrl.run.progress import Summary

            sinks.append(Summary(self.summary))
        result = train(
            config,
            quiet=self.quiet,
            resume=resume,
            world=self.world,
            env=self.env,
            eval_env=self.eval_env,
            callbacks=[*self.callbacks, *callbacks, *sinks],
        )
        self.config, self.result, self.policy = config, result, result.policy
        self.run_dir, self._resume, self._continue = result.run_dir, None, ([], None)
        return self

    def _next_run(self, total_steps: int | None) -> tuple[Config, dict | None]:
        """The config and checkpoint payload (None: a new run) of the next :meth:`learn`."""
        total = [] if total_steps is None else [f"ppo.total_steps={total_steps}"]
        if self._resume is not None:
            return build_config(self.config, total), self._resume
        if self._continue is None:
            return build_config(self.config, total), None
        overrides, payload = self._continue
        if payload is None:
            _, payload = resume_checkpoint(self.run_dir)
        return resume_config(self.run_dir, payload, [*overrides, *total]), payload

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
        prev_action: Any = None,
        prev_reward: Any = None,
    ) -> tuple[np.ndarray, Any]:
        """``(action, state)`` for one observation or a batch ``[B, ...]``, as sb3's
        ``predict``: pass ``state=None`` and ``episode_start=True`` at the first step, then
        the returned state (``ActorCritic.act``; greedy unless ``deterministic=False``). A
        policy that reads the previous action / reward (``policy.prev_action``, which ``auto``
        turns on for envs that declare they need it; ``policy.prev_reward``) also takes the
        last action sent to the env and the reward it returned."""
        if self.policy is None:
            raise CheckpointError("the model has no policy yet: call learn() or PPO.load()")
        return self.policy.act(obs, state, episode_start, deterministic, prev_action, prev_reward)

    def save(self, path: str | Path) -> Path:
        """Write the policy with its config and spaces to ``path`` (a checkpoint that
        ``recurrl.load_policy``, ``PPO.load``, ``recurrl eval`` and ``recurrl export`` read;
        continuing training goes through the run folder: ``PPO.load(run_dir)``)."""
        if self.policy is None:
            raise CheckpointError("the model has no policy yet: call learn() or PPO.load()")
        step = self.result.global_step if self.result is not None else 0
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(path, self.policy, to_dict(self.config), step)
