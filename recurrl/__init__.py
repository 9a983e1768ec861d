"""recurrl: recurrent policies for partially observable reinforcement learning.

Importing ``recurrl`` (or ``recurrl.nn``, ``recurrl.policy``) registers no environment.
``import recurrl.envs`` registers the ``recurrl/*`` Gymnasium ids, like ``import ale_py``; the
CLI and :func:`recurrl.algo.make_env.make_vector_env` do it for you, and
``gymnasium.make("recurrl.envs:recurrl/TMaze-v0")`` does it from the id alone.
"""

__version__ = "0.1.0"

__all__ = ["PPO", "Callback", "StopOnReturn", "StopTraining", "__version__", "load_policy"]

_LAZY = {
    "PPO": "recurrl.run.agent",
    "Callback": "recurrl.run.callbacks",
    "StopOnReturn": "recurrl.run.callbacks",
    "StopTraining": "recurrl.run.callbacks",
    "load_policy": "recurrl.run.checkpoints",
}


def __getattr__(name: str):
    # Lazy so that `import recurrl.nn` stays light and import order stays low -> high level.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recurrl' has no attribute {name!r}")
