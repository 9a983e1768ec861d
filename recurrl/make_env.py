"""Building vector envs from ``env.*`` config keys."""

from __future__ import annotations

import difflib
import importlib

import gymnasium as gym

from recurrl.config import ConfigError, EnvConfig


def resolve_env_id(env_id: str) -> str:
    """Import ``module`` of ``module:Id`` (third-party registrations), check the id exists."""
    import envs  # noqa: F401  (registers recurrl/* ids)

    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except Exception as error:  # any import failure is the user's module, name it
            raise ConfigError(
                f"env.id: cannot import module {module!r}: {type(error).__name__}: {error}"
            ) from None
    if env_id not in gym.registry:
        guess = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        raise ConfigError(f"env.id: unknown environment {env_id!r}{hint}")
    return env_id


def make_vector_env(config: EnvConfig, num_envs: int | None = None) -> gym.vector.VectorEnv:
    """A ``VectorEnv`` of ``num_envs`` (default ``config.num_envs``) copies.

    ``auto`` uses the env's own batched implementation when it registers one, otherwise
    Gymnasium's ``SyncVectorEnv`` in SAME_STEP autoreset mode (no wasted reset steps).
    """
    env_id = resolve_env_id(config.id)
    num_envs = num_envs or config.num_envs
    spec = gym.spec(env_id)
    mode = config.vectorization
    if mode == "auto":
        mode = "native" if spec.vector_entry_point is not None else "sync"
    if mode == "native" and spec.vector_entry_point is None:
        raise ConfigError(f"env.vectorization: {env_id} has no native vector implementation")
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
            **config.kwargs,
        )
    except TypeError as error:
        raise ConfigError(f"env.kwargs: {env_id} rejected its arguments: {error}") from None
