"""recurrl: recurrent policies for partially observable reinforcement learning."""

import envs as _envs  # noqa: F401  (registers the recurrl/* Gymnasium ids)

__version__ = "0.1.0"

__all__ = ["__version__", "load_policy"]


def __getattr__(name: str):
    # Lazy so that `import recurrl.nn` stays light and import order stays low -> high level.
    if name == "load_policy":
        from recurrl.checkpoint import load_policy

        return load_policy
    raise AttributeError(f"module 'recurrl' has no attribute {name!r}")
