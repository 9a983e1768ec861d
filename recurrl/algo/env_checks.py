"""What the collector checks in what envs return: errors named by env, index and step, and
non-finite observations and rewards located.

A vector env steps all its copies in one call, so which copy raised is known only for
Gymnasium's ``SyncVectorEnv`` (the loop index of the frame that raised) and
``AsyncVectorEnv`` (the worker index it reports); a natively batched env has no single copy to
blame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from recurrl.errors import EnvStepError, NonFiniteError
from recurrl.policy.tree import stack_observations, tree_map


def failing_index(error: BaseException) -> int | None:
    """The index of the env copy that raised ``error`` inside a vector env's ``step``, if known."""
    index, trace = None, error.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "step" and isinstance(owner, gym.vector.SyncVectorEnv):
            index = frame.f_locals.get("i", index)
        elif frame.f_code.co_name == "_raise_if_errors" and isinstance(
            owner, gym.vector.AsyncVectorEnv
        ):
            index = frame.f_locals.get("index", index)
        trace = trace.tb_next
    return index if isinstance(index, int) else None


def describe_env_error(env_id: str, error: BaseException, what: str, where: str) -> str:
    """``env ID raised ValueError: ... while stepping at ... (env index 2)``."""
    index = failing_index(error)
    copy = f"env index {index}" if index is not None else "env index unknown (stepped as a batch)"
    return f"env {env_id} raised {type(error).__name__}: {error} while {what} {where} ({copy})"


def named_leaves(obs: Any, name: str = "observation") -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` for every array of a (nested ``dict`` / ``tuple``) observation."""
    if isinstance(obs, dict):
        for key, value in obs.items():
            yield from named_leaves(value, f"{name}[{key!r}]")
    elif isinstance(obs, tuple):
        for i, value in enumerate(obs):
            yield from named_leaves(value, f"{name}[{i}]")
    else:
        yield name, np.asarray(obs)


def all_finite(obs: Any) -> bool:
    """Whether no float array in ``obs`` (an array, or nested ``dict`` / ``tuple`` of them, the
    leaves :func:`named_leaves` visits) holds NaN or inf."""
    if isinstance(obs, dict):
        return all(all_finite(value) for value in obs.values())
    if isinstance(obs, tuple):
        return all(all_finite(value) for value in obs)
    array = np.asarray(obs)
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def nonfinite_rows(
    values: dict[str, Any], num_envs: int, index: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Which of ``num_envs`` rows hold NaN or inf in any of ``values`` (named arrays or trees).

    ``index`` gives the env index of each row when the rows are a subset of the envs.

    Returns:
        ``(bad [num_envs] bool, description of the first bad value)``, e.g.
        ``"nan in observation['cue'] of env index 3 (and 1 more env)"``; ``""`` when all finite.
    """
    bad = np.zeros(num_envs, dtype=bool)
    first = ""
    for label, tree in values.items():
        for name, leaf in named_leaves(tree, label):
            if leaf.dtype.kind not in "fc" or leaf.size == 0:
                continue  # integer / bool parts cannot hold NaN
            finite = np.isfinite(leaf.reshape(num_envs, -1)).all(axis=1)
            if finite.all():
                continue
            if not first:
                row = int(np.flatnonzero(~finite)[0])
                kind = "nan" if np.isnan(leaf.reshape(num_envs, -1)[row]).any() else "inf"
                env_index = int(index[row]) if index is not None else row
                first = f"{kind} in {name} of env index {env_index}"
            bad |= ~finite
    if first and bad.sum() > 1:
        more = int(bad.sum()) - 1
        first += f" (and {more} more env{'s' if more > 1 else ''})"
    return bad, first


def final_observations(info: dict, rows: np.ndarray):
    """Stack ``info["final_obs"]`` for ``rows`` (an object array or a dense array / dict / tuple
    of arrays; nested observations come back as a dict / tuple of stacked arrays)."""
    final = info["final_obs"]
    if isinstance(final, dict | tuple):
        return tree_map(lambda x: np.asarray(x)[rows], final)
    return stack_observations([final[i] for i in rows])


class GuardedEnvs:
    """A vector env's ``step`` and single-copy ``reset``, with errors named and outputs checked.

    Args:
        envs: the vector env.
        env_id: its name in messages.
        skip_nonfinite: report NaN / inf rows to the caller instead of raising.
        bootstrap_final: whether truncated rows' ``info["final_obs"]`` feed a bootstrap (SAME_STEP
            autoreset), so they are checked too.
    """

    def __init__(
        self, envs: gym.vector.VectorEnv, env_id: str, skip_nonfinite: bool, bootstrap_final: bool
    ) -> None:
        self.envs, self.env_id = envs, env_id
        self.skip_nonfinite, self.bootstrap_final = skip_nonfinite, bootstrap_final

    def step(self, actions: np.ndarray, where: str) -> tuple:
        """``envs.step``; an exception becomes an EnvStepError naming env, copy and ``where``."""
        try:
            return self.envs.step(actions)
        except Exception as error:
            message = describe_env_error(self.env_id, error, "stepping", where)
            raise EnvStepError(message) from error

    def nonfinite(self, next_obs, reward, truncated, info: dict, where: str) -> np.ndarray | None:
        """Rows ``[B]`` with a NaN / inf reward, observation or bootstrapped final observation,
        or ``None`` when all are finite (checked first, without locating anything).

        Raises:
            NonFiniteError: there are some and ``skip_nonfinite`` is off.
        """
        reward = np.asarray(reward)
        final, rows = None, None
        if self.bootstrap_final and truncated.any():
            rows = np.flatnonzero(truncated)
            final = final_observations(info, rows)
        if all_finite(reward) and all_finite(next_obs) and (final is None or all_finite(final)):
            return None
        values = {"reward": reward, "observation": next_obs}
        bad, what = nonfinite_rows(values, self.envs.num_envs)
        if final is not None:
            named = {"final observation": final}
            final_bad, final_what = nonfinite_rows(named, len(rows), index=rows)
            bad[rows[final_bad]] = True
            what = what or final_what
        if not bad.any():  # all_finite and nonfinite_rows visit the same leaves; be safe anyway
            return None
        if not self.skip_nonfinite:
            raise NonFiniteError(
                f"env {self.env_id} returned {what} {where}; set env.skip_nonfinite=true to mask "
                f"such steps out of training and reset that env instead"
            )
        return bad

    def reset_rows(self, rows: np.ndarray, where: str) -> Any:
        """Reset the copies where ``rows`` ([B] bool) is set (``options["reset_mask"]``, which
        Gymnasium's sync / async vector envs and recurrl's native envs support); returns the
        whole batch's observation."""
        try:
            obs, _ = self.envs.reset(options={"reset_mask": rows.copy()})
        except Exception as error:
            message = describe_env_error(self.env_id, error, "resetting", where)
            raise EnvStepError(message) from error
        still_bad, what = nonfinite_rows({"reset observation": obs}, self.envs.num_envs)
        if still_bad.any():
            raise NonFiniteError(f"env {self.env_id} returned {what} {where}")
        return obs
