"""Building vector envs from ``env.*`` config keys."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch

from recurrl.config import ConfigError, EnvConfig


def import_user_module(name: str, key: str) -> Any:
    """Import the user's module ``name`` for config key ``key``, as ``python -m`` would.

    The current folder is searched first, as ``python -m`` and ``python script.py`` do, so
    ``env.id: myenv:MyEnv-v0`` finds ``./myenv.py`` from the ``recurrl`` console script too.
    Any import failure is the user's module: it is named in a :class:`ConfigError`.
    """
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise ConfigError(
            f"{key}: cannot import module {name!r}: {type(error).__name__}: {error}"
        ) from None


def resolve_env_id(env_id: str) -> str:
    """Import ``module`` of ``module:Id`` (third-party registrations), check the id exists."""
    from recurrl import envs  # noqa: F401  (registers recurrl/* ids)

    if env_id.startswith(PASSED):
        raise ConfigError(
            f"env.id: {env_id} was passed from Python and cannot be made again from its name "
            f"(defined in a script or a function); pass it again (recurrl.PPO.load(RUN_DIR, "
            f"env=...)), or evaluate with policy.act"
        )
    module = None
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        import_user_module(module, "env.id")
    if env_id not in gym.registry:
        guess = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        namespace = env_id.partition("/")[0] if "/" in env_id else None
        known = {spec.namespace for spec in gym.registry.values()}
        if module is not None:
            hint += f"; importing module {module!r} did not register it"
        elif namespace is None or namespace not in known:
            # Ids such as popgym-RepeatFirstEasy-v0 exist only once their module is imported.
            hint += f"; if a module registers it, write env.id=MODULE:{env_id}"
        raise ConfigError(f"env.id: unknown environment {env_id!r}{hint}")
    return env_id


def import_wrapper(index: int, path: str) -> Callable[..., gym.Env]:
    """Import ``env.wrappers[index].path`` = ``"package.module:Class"`` (never evaluated)."""
    module_name, _, attribute = path.partition(":")
    key = f"env.wrappers[{index}]"
    target = import_user_module(module_name, key)
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{key}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{key}: {path!r} is not a class or callable")
    return target


class WrapperFactory:
    """``env -> wrapper(env, **kwargs)`` for ``env.wrappers[index]`` (picklable, for async)."""

    def __init__(self, index: int, path: str, kwargs: dict[str, Any]) -> None:
        self.index, self.path, self.kwargs = index, path, kwargs
        self.wrapper = import_wrapper(index, path)

    def __getstate__(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "kwargs": self.kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["index"], state["path"], state["kwargs"])

    def __call__(self, env: gym.Env) -> gym.Env:
        try:
            return self.wrapper(env, **self.kwargs)
        except TypeError as error:
            raise ConfigError(
                f"env.wrappers[{self.index}]: {self.path} rejected its arguments: {error}"
            ) from None


def make_wrappers(config: EnvConfig) -> list[WrapperFactory]:
    """The ``env.wrappers`` list as wrapper functions, imported now so errors come first."""
    return [
        WrapperFactory(i, wrapper["path"], dict(wrapper.get("kwargs") or {}))
        for i, wrapper in enumerate(config.wrappers)
    ]


EnvSource = str | Callable[[], gym.Env] | gym.vector.VectorEnv
"""An env passed from Python: an id, a factory of single envs (an ``Env`` class, a function),
or a ready ``VectorEnv``."""

PASSED = "<"
"""``env.id`` of an env passed from Python starts so (``<callable mod:Name>``): not an id."""


def describe_env(env: EnvSource) -> str:
    """The ``env.id`` recorded for ``env``: the id itself, a ``VectorEnv``'s registered id, or
    ``<callable module:qualname>`` / ``<VectorEnv module:qualname>``.

    Raises:
        ConfigError: ``env`` is a single ``gymnasium.Env`` instance or not an env at all.
    """
    if isinstance(env, str):
        return env
    if isinstance(env, gym.vector.VectorEnv):
        spec = getattr(env, "spec", None)
        if spec is not None and spec.id in gym.registry:
            return spec.id
        return f"{PASSED}VectorEnv {type(env).__module__}:{type(env).__qualname__}>"
    if isinstance(env, gym.Env):
        raise ConfigError(
            f"env: got the env instance {env!r}; pass a factory that makes one (its class or "
            f"a function), as recurrl steps env.num_envs copies, or a gymnasium VectorEnv"
        )
    if callable(env):
        name = getattr(env, "__qualname__", type(env).__qualname__)
        return f"{PASSED}callable {getattr(env, '__module__', '?')}:{name}>"
    raise ConfigError(f"env: expected an id, an env factory or a VectorEnv, got {env!r}")


def passed_factory(env_id: str) -> Callable[[], gym.Env] | None:
    """The factory that ``<callable module:qualname>`` names, imported again; None when it
    cannot be (defined in ``__main__`` or inside a function, or not importable)."""
    prefix = f"{PASSED}callable "
    if not (env_id.startswith(prefix) and env_id.endswith(">")):
        return None
    module_name, _, qualname = env_id[len(prefix) : -1].partition(":")
    if module_name == "__main__" or "<" in qualname:
        return None
    try:
        target = import_user_module(module_name, "env.id")
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ConfigError, AttributeError):
        return None
    return target if callable(target) else None


def _passed_vector_env(
    config: EnvConfig, num_envs: int, env: Callable[[], gym.Env] | gym.vector.VectorEnv
) -> gym.vector.VectorEnv:
    """``env`` itself (a VectorEnv of ``num_envs``), or ``num_envs`` copies from the factory."""
    if isinstance(env, gym.vector.VectorEnv):
        for key, value in (("kwargs", config.kwargs), ("wrappers", config.wrappers)):
            if value:
                raise ConfigError(f"env.{key}: a VectorEnv passed as is takes none")
        if env.num_envs != num_envs:
            raise ConfigError(
                f"env.num_envs: the VectorEnv passed has {env.num_envs} envs, not {num_envs}; "
                f"set env.num_envs={env.num_envs} (or pass a factory to make copies)"
            )
        return env
    describe_env(env)  # refuses what is not a factory
    wrappers = make_wrappers(config)

    def make_one() -> gym.Env:
        single = env(**config.kwargs)
        for wrap in wrappers:
            single = wrap(single)
        return single

    autoreset = gym.vector.AutoresetMode.SAME_STEP
    try:
        if config.vectorization == "async":
            return gym.vector.AsyncVectorEnv([make_one] * num_envs, autoreset_mode=autoreset)
        return gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=autoreset)
    except TypeError as error:
        raise ConfigError(f"env.kwargs: {config.id} rejected its arguments: {error}") from None


def make_vector_env(
    config: EnvConfig,
    num_envs: int | None = None,
    env: EnvSource | None = None,
    *,
    device: str | torch.device = "cpu",
) -> gym.vector.VectorEnv:
    """A ``VectorEnv`` of ``num_envs`` (default ``config.num_envs``) copies.

    ``auto`` uses the env's own batched implementation when it registers one, otherwise
    Gymnasium's ``SyncVectorEnv`` in SAME_STEP autoreset mode (no wasted reset steps).
    ``env.wrappers`` wrap each single env, so they need sync or async vectorization (``auto``
    picks sync).

    ``env`` (an env passed from Python) replaces ``config.id``: a factory is called with
    ``env.kwargs`` for each copy (wrapped by ``env.wrappers``, vectorised sync or, with
    ``env.vectorization=async``, async); a ``VectorEnv`` is used as is (it must have
    ``num_envs`` envs; the caller keeps it and closes it). Without ``env``, an ``env.id``
    recorded for a factory (``<callable module:Name>``) imports it again where it can.

    ``torch`` builds the id's device-resident env (:mod:`recurrl.envs.device`) on ``device``:
    it takes and returns tensors there (the other modes ignore ``device``).

    Raises:
        ConfigError: naming ``env.vectorization`` (no such implementation, or wrappers with
            ``torch``), ``env.wrappers``, or ``env.kwargs`` (the env refused its arguments:
            its own message, one line).
    """
    num_envs = num_envs or config.num_envs
    if env is None and config.id.startswith(PASSED):
        env = passed_factory(config.id)  # None: resolve_env_id says what to do
    if env is not None and not isinstance(env, str) and config.vectorization == "torch":
        raise ConfigError(
            "env.vectorization: torch needs an env.id with a torch implementation, not an env "
            "passed from Python"
        )
    if env is not None and not isinstance(env, str):
        return _passed_vector_env(config, num_envs, env)
    if env is not None:
        config = dataclasses.replace(config, id=env)
    env_id = resolve_env_id(config.id)
    wrappers = make_wrappers(config)
    spec = gym.spec(env_id)
    mode = config.vectorization
    if mode == "torch":
        return _torch_vector_env(config, env_id, num_envs, device)
    if mode == "auto":
        mode = "native" if spec.vector_entry_point is not None and not wrappers else "sync"
    if mode == "native" and spec.vector_entry_point is None:
        raise ConfigError(f"env.vectorization: {env_id} has no native vector implementation")
    if mode == "native" and wrappers:
        raise ConfigError(
            "env.wrappers: a native vector env has no single envs to wrap; "
            "use env.vectorization=sync (or async)"
        )
    try:
        if mode == "native":
            return gym.make_vec(
                env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **config.kwargs
            )
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            wrappers=wrappers or None,
            **config.kwargs,
        )
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise _kwargs_error(config, env_id, error) from None


def _kwargs_error(config: EnvConfig, env_id: str, error: Exception) -> ConfigError:
    """The env's constructor refused ``env.kwargs`` (``env.id`` when there are none): a
    :class:`ConfigError` with the env's own message on one line."""
    message = " ".join(str(error).split())
    key = "env.kwargs" if config.kwargs else "env.id"
    return ConfigError(f"{key}: {env_id} rejected its arguments: {message}")


def _torch_vector_env(
    config: EnvConfig, env_id: str, num_envs: int, device: str | torch.device
) -> gym.vector.VectorEnv:
    """``env.vectorization: torch``: the id's device-resident env on ``device``."""
    from recurrl.envs.device import TORCH_VECTOR_ENVS, make_torch_vector_env

    if env_id not in TORCH_VECTOR_ENVS:
        raise ConfigError(
            f"env.vectorization: {env_id} has no torch implementation; these do: "
            f"{', '.join(TORCH_VECTOR_ENVS)}"
        )
    if config.wrappers:
        raise ConfigError(
            "env.vectorization: torch steps the env as tensors and has no single envs for "
            "env.wrappers; use env.vectorization=native (or sync) with wrappers"
        )
    try:
        return make_torch_vector_env(env_id, num_envs, device, **config.kwargs)
    except (TypeError, ValueError) as error:
        raise _kwargs_error(config, env_id, error) from None


PREV_ACTION_FLAG = "obs_requires_prev_action"
"""The class attribute with which an env says its observation means nothing without the action
that led to it (POPGym's convention: a hit or miss, a payout, says nothing of *which* square or
arm was chosen, and sampled actions cannot be recalled from the policy's own state)."""


def declares_prev_action(envs: gym.vector.VectorEnv) -> bool:
    """Whether ``envs`` (its single env, or the class its id registers) sets
    :data:`PREV_ACTION_FLAG`. Read without stepping or calling into worker processes."""
    singles = getattr(envs, "envs", None)  # SyncVectorEnv
    if singles:
        return bool(getattr(singles[0].unwrapped, PREV_ACTION_FLAG, False))
    if hasattr(envs.unwrapped, PREV_ACTION_FLAG):
        return bool(getattr(envs.unwrapped, PREV_ACTION_FLAG))
    spec = getattr(envs, "spec", None)
    entry_point = getattr(spec, "entry_point", None)
    try:
        if isinstance(entry_point, str):
            entry_point = gym.envs.registration.load_env_creator(entry_point)
    except Exception:  # an id whose entry point cannot be imported here: nothing declared
        return False
    return bool(getattr(entry_point, PREV_ACTION_FLAG, False))


AUTORESET_MODES = {"NextStep": True, "SameStep": False}
"""The vector-env autoreset modes recurrl steps through: mode -> "is NEXT_STEP"."""


def autoreset_is_next_step(envs: gym.vector.VectorEnv, env_id: str | None = None) -> bool:
    """Whether ``envs`` autoresets in Gymnasium's NEXT_STEP mode (else SAME_STEP).

    Read from ``envs.metadata["autoreset_mode"]`` (an ``AutoresetMode`` or its string value),
    NEXT_STEP when absent, as Gymnasium's default. The collector and evaluation both ask here.

    Raises:
        ConfigError: any other mode (e.g. ``DISABLED``), naming it and the env.
    """
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    value = mode.value if isinstance(mode, gym.vector.AutoresetMode) else mode
    if not isinstance(value, str) or value not in AUTORESET_MODES:
        name = env_id or getattr(getattr(envs, "spec", None), "id", None) or type(envs).__name__
        raise ConfigError(
            f"env.id: {name} autoresets in mode {value!r}; recurrl needs NextStep or SameStep "
            f"(gymnasium.vector.AutoresetMode.NEXT_STEP or SAME_STEP)"
        )
    return AUTORESET_MODES[value]
