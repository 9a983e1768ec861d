"""Callbacks: what the trainer calls at the start, after each update and evaluation, after each
checkpoint and at the end.

Everything that watches training is one: the console progress and summary
(``recurrl.run.progress``), ``metrics.jsonl``, W&B and TensorBoard (``recurrl.run.tracking``),
and the user's own, passed as ``recurrl.PPO(...).learn(callbacks=[...])``. The trainer calls
the user's callbacks first, so a value one adds to ``metrics`` reaches every sink::

    class LogSteps(recurrl.Callback):
        def on_update(self, metrics):
            metrics["custom/steps_k"] = metrics["global_step"] / 1000

A callback stops training by returning ``False`` from :meth:`Callback.on_update` /
:meth:`Callback.on_eval` or raising :class:`StopTraining`; the run then ends as a finished one
(``latest.pt`` and ``final.pt`` written), with ``result.stopped_by`` naming the callback.
The trainer's part: ``recurrl.run.train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a finished run leaves behind (what :meth:`Callback.on_end` gets)."""

    run_dir: Path
    global_step: int
    history: list[dict]  # one metrics dict per update (a resumed run's earlier ones too)
    policy: Any  # the trained :class:`~recurrl.policy.ActorCritic`
    interrupted: int | None = None  # the signal that stopped the run early, if any
    stopped_by: str | None = None  # the callback that ended training early, if any


class StopTraining(Exception):  # noqa: N818 (a request, not an error)
    """Raised by a callback to end training after the current update."""


@dataclass
class RunInfo:
    """What :meth:`Callback.on_start` gets: the run about to train."""

    run_dir: Path
    env_id: str  # ``env.id``: a registered id, or ``<callable ...>`` for an env passed in
    observation_space: Any
    action_space: Any
    num_envs: int  # per rank
    rank: int  # this process's rank (0 logs and writes)
    world_size: int
    parameters: int  # trainable parameters of the policy
    core: str  # ``policy.core``
    cells: str  # which implementation runs the cells: native, fused, reference, python loop
    device: str
    start_step: int  # > 0: resumed from this step
    total_steps: int  # the steps the run ends at: ``ppo.total_steps`` up to whole updates
    steps_per_update: int  # all ranks
    config: Any  # the resolved :class:`recurrl.config.Config`
    eval_env: Any = None  # what separate evaluation envs are made from (None: ``env.id``)
    notes: list[str] = field(default_factory=list)  # lines a sink adds to the start banner
    encoder_inputs: list[int] = field(default_factory=list)  # features into each MLP encoder

    @classmethod
    def of(cls, trainer: Any, total_steps: int) -> RunInfo:
        """The info of a :class:`~recurrl.run.train.Trainer` about to run to ``total_steps``."""
        from recurrl.policy.encoders import mlp_input_widths
        from recurrl.run.progress import describe_cells

        policy, config, envs = trainer.policy, trainer.config, trainer.envs
        return cls(
            run_dir=trainer.run_dir,
            env_id=config.env.id,
            observation_space=envs.single_observation_space,
            action_space=envs.single_action_space,
            num_envs=envs.num_envs,
            rank=trainer.world.rank,
            world_size=trainer.world.size,
            parameters=sum(p.numel() for p in policy.parameters() if p.requires_grad),
            core=config.policy.core,
            cells=describe_cells(policy, trainer.device, envs.num_envs),
            device=str(trainer.device)
            + (f" ({trainer.device_reason})" if getattr(trainer, "device_reason", "") else ""),
            start_step=trainer.global_step,
            total_steps=total_steps,
            steps_per_update=trainer.steps_per_update,
            config=config,
            eval_env=trainer.eval_env,
            encoder_inputs=mlp_input_widths(envs.single_observation_space, config.policy.encoder),
        )


class Callback:
    """Hooks the trainer calls; override those you need. Every hook gets plain data.

    ``metrics`` is one update's flat dict (``global_step``, ``episodic_return``,
    ``policy_loss``, ..., and ``eval_return_mean`` ... on updates that evaluated); keys added
    to it are logged (``metrics.jsonl``, W&B, TensorBoard).
    """

    def on_start(self, info: RunInfo) -> None:
        """Before the first update (also of a resumed run)."""

    def on_update(self, metrics: dict[str, Any]) -> bool | None:
        """After each update (and its evaluation, if one was due); ``False`` stops training."""

    def on_eval(self, metrics: dict[str, Any]) -> bool | None:
        """After each evaluation, before ``on_update``; ``False`` stops training."""

    def on_checkpoint(self, path: Path, aliases: list[str], global_step: int) -> None:
        """After ``latest.pt`` (periodic, with ``aliases``), ``best.pt`` or ``final.pt``."""

    def on_end(self, result: Any) -> None:
        """Once at the end: the :class:`~recurrl.run.train.TrainResult`, or None when training
        failed (the error is raised after this)."""


class StopOnReturn(Callback):
    """Stop training once ``metric`` reaches ``threshold``.

    Args:
        threshold: the return to reach.
        metric: ``episodic_return`` (the mean of the training episodes that ended in the
            update) or ``eval_return_mean`` (needs ``eval.every``).
    """

    def __init__(self, threshold: float, metric: str = "episodic_return") -> None:
        self.threshold, self.metric = threshold, metric

    def on_update(self, metrics: dict[str, Any]) -> bool | None:
        value = metrics.get(self.metric)
        if value is not None and value == value and value >= self.threshold:
            return False
        return None

    def __repr__(self) -> str:
        return f"StopOnReturn({self.threshold}, metric={self.metric!r})"


class CallbackList:
    """The trainer's callbacks in call order (the user's first, then the sinks)."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, info: RunInfo) -> None:
        for callback in self.callbacks:
            callback.on_start(info)

    def after_update(self, metrics: dict[str, Any], evaluated: bool) -> str | None:
        """``on_eval`` (if ``evaluated``) then ``on_update`` on every callback.

        Returns:
            The first callback that asked to stop (as text), or None. Every callback still
            sees the update, so the sinks log it.
        """
        stopped_by = None
        hooks = ("on_eval", "on_update") if evaluated else ("on_update",)
        for hook in hooks:
            for callback in self.callbacks:
                reason = None
                try:
                    stop = getattr(callback, hook)(metrics) is False
                except StopTraining as request:
                    stop, reason = True, str(request)
                if stop and stopped_by is None:
                    stopped_by = _name(callback) + (f": {reason}" if reason else "")
        return stopped_by

    def on_checkpoint(self, path: Path, aliases: list[str], global_step: int) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(path, aliases, global_step)

    def on_end(self, result: Any) -> None:
        """Every callback's ``on_end``, even when one raises (the first error is raised)."""
        error = None
        for callback in self.callbacks:
            try:
                callback.on_end(result)
            except Exception as caught:
                error = error or caught
        if error is not None:
            raise error


def _name(callback: Callback) -> str:
    """The callback's own ``repr`` if its class has one, else its class name."""
    if type(callback).__repr__ is not object.__repr__:
        return repr(callback)
    return type(callback).__name__
