"""Exact resume: the training state a checkpoint holds beyond the policy, and a graceful stop.

A training checkpoint (``checkpoints/latest.pt``) holds, besides the policy, the optimizer and
the resolved config, a ``training`` dict of tensors and plain data (so ``weights_only=True``
loading still works):

- ``update``, ``time_s``, ``last_checkpoint``, ``best_eval_return``, ``wandb_id``;
- ``rng``: the torch (CPU and CUDA), numpy and Python global generators and the PPO minibatch
  generator;
- ``collector``: the :class:`~recurrl.algo.rollout.Collector`'s live state (current observation,
  recurrent state, ``episode_start``, pending resets, running episode returns and lengths,
  reward-scaler statistics);
- ``envs``: the vector env's own state when it implements :class:`StatefulVectorEnv`, else None.

With a stateful vector env, a run stopped after any update and resumed on the same device
reproduces the uninterrupted run exactly (same parameters, same metrics). Other envs (e.g.
Gymnasium's ``SyncVectorEnv``) cannot hand over their state: they restart with a fresh reset
(seeded from ``seed`` and the step), the recurrent state and the running episode statistics
start anew, and the run goes on from there; everything else is restored.
"""

from __future__ import annotations

import copy
import json
import random
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from recurrl.config import Config, ConfigError, config_from_dict, parse_override, to_dict
from recurrl.run.checkpoint import CheckpointError, load_checkpoint

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


# --- per-rank state and rollback ------------------------------------------------------------


def rank_state_of(training: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s ``rng`` / ``collector`` / ``envs`` in a checkpoint's ``training`` state.

    Rank 0's state sits at the top level (as in a single-process checkpoint); a data-parallel
    checkpoint also holds ``world_size`` and the other ranks' states in ``other_ranks``. None
    for a rank the checkpoint has no state for (it was written by fewer ranks).
    """
    if rank == 0:
        return training
    others = training.get("other_ranks", [])
    return others[rank - 1] if rank - 1 < len(others) else None


def merge_rank_states(common: dict[str, Any], ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint's ``training`` state: ``common`` counters plus every rank's own state."""
    return {**common, **ranks[0], "world_size": len(ranks), "other_ranks": ranks[1:]}


class Rollback:
    """The state the last completed update left, to fall back to when the next one fails.

    Holds copies of the policy's and optimizer's state and this rank's ``rank_state`` (random
    streams, collector, envs as they were before the rollout), so a checkpoint written after a
    failure mid-update is the checkpoint the last update would have written.
    """

    def __init__(
        self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, rank_state: dict
    ) -> None:
        self.policy, self.optimizer, self.rank_state = policy, optimizer, rank_state
        self.policy_state = {key: value.clone() for key, value in policy.state_dict().items()}
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())

    def restore(self) -> None:
        """Put the parameters, statistics and optimizer state back."""
        self.policy.load_state_dict(self.policy_state)
        self.optimizer.load_state_dict(self.optimizer_state)


# --- resuming a run folder -------------------------------------------------------------------


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
    for text in overrides:
        key, value = parse_override(text)
        node = data
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a mapping")
        node[key.split(".")[-1]] = value
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
    return config


def read_metrics(run_dir: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records of a run (those at or before ``up_to_step`` if given)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if up_to_step is None:
        return records
    return [r for r in records if r["global_step"] <= up_to_step]


def truncate_metrics(run_dir: Path, global_step: int) -> list[dict[str, Any]]:
    """Drop records logged after the checkpoint (a crash after it); return those kept."""
    kept = read_metrics(run_dir, global_step)
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(json.dumps(record) + "\n" for record in kept))
        temporary.replace(path)
    return kept


# --- graceful stop ---------------------------------------------------------------------------


class GracefulStop:
    """First SIGINT or SIGTERM: finish the current update, checkpoint, stop cleanly.

    A second signal raises ``KeyboardInterrupt`` at once. Handlers are installed only in the
    main thread (``signal`` allows no other), never over an ignored signal, and restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: signal.signal(sig, self._handle)
            for sig in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(sig) is not signal.SIG_IGN  # e.g. under nohup: stay ignored
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nrecurrl: {signal.Signals(signum).name} received: finishing this update and "
            f"writing a checkpoint (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
