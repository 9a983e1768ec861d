"""recurrl's environments: partially observable control and a memory suite.

Importing this package registers every id under the ``recurrl/`` namespace with Gymnasium.
Depends on gymnasium and numpy only, never on ``recurrl``.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENVIRONMENTS: dict[str, dict] = {
    # id -> facts shown by `recurrl envs` (memory type, optimum, memoryless score).
    "recurrl/CartPoleNoVelocity-v0": {
        "memory": "infer velocity from 2+ positions",
        "difficulty": "-",
        "optimal_return": 500.0,
        "memoryless_return": "~50 (reported by sb3-contrib)",
    },
    "recurrl/PendulumNoVelocity-v0": {
        "memory": "infer angular velocity",
        "difficulty": "-",
        "optimal_return": -150.0,
        "memoryless_return": "well below",
    },
}


def _register(env_id: str, **kwargs) -> None:
    if env_id not in registry:
        register(id=env_id, **kwargs)


_register(
    "recurrl/CartPoleNoVelocity-v0",
    entry_point="envs.wrappers:cartpole_no_velocity",
    max_episode_steps=500,
    reward_threshold=475.0,
)
_register(
    "recurrl/PendulumNoVelocity-v0",
    entry_point="envs.wrappers:pendulum_no_velocity",
    max_episode_steps=200,
)
