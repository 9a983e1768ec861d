"""recurrl's environments: partially observable control and a memory suite.

Importing this package registers every id under the ``recurrl/`` namespace with Gymnasium.
Depends on gymnasium and numpy only, never on ``recurrl``.

The memory suite (``envs.tmaze`` ... ``envs.point_recall``) is natively batched:
``gymnasium.make_vec(id, num_envs=N)`` returns the env's own ``VectorEnv`` (SAME_STEP autoreset,
see ``envs.core``) and ``gymnasium.make(id)`` a single copy. Each task ends its own episodes at a
length set by its difficulty knobs, so no ``max_episode_steps`` is registered for them (a fixed
time limit would cut longer settings short); ``episode_steps`` below gives the length.

``recurrl/CartPoleNoVelocity-v0`` is natively batched too (``envs.cartpole``, the same physics
and seeding as its single env ``CartPole-v1`` under ``envs.wrappers.MaskObservation``, with the
registered ``max_episode_steps=500``); ``recurrl/PendulumNoVelocity-v0`` is not (``make_vec``
gives Gymnasium's ``SyncVectorEnv``).
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

ENVIRONMENTS: dict[str, dict[str, Any]] = {
    # id -> facts shown by `recurrl envs`. Returns are per episode at the default difficulty;
    # "difficulty" holds the knobs (env kwargs) and their defaults, "difficulty_bounds" the
    # values each task's constructor accepts (it raises ValueError outside them).
    "recurrl/CartPoleNoVelocity-v0": {
        "memory": "infer velocity from 2+ positions",
        "difficulty": {},
        "difficulty_bounds": {},
        "optimal_return": 500.0,
        "memoryless_return": "~50 (reported by sb3-contrib)",
        "description": "CartPole-v1 observing cart position and pole angle only.",
    },
    "recurrl/PendulumNoVelocity-v0": {
        "memory": "infer angular velocity",
        "difficulty": {},
        "difficulty_bounds": {},
        "optimal_return": -150.0,
        "memoryless_return": "well below",
        "description": "Pendulum-v1 observing cos and sin of the angle only.",
    },
    "recurrl/TMaze-v0": {
        "memory": "hold 1 bit over a long delay",
        "difficulty": {"length": 20, "time_budget": None},
        "difficulty_bounds": {
            "length": ">= 1",
            "time_budget": ">= length + 1; None = 2 * (length + 1)",
        },
        "optimal_return": 1.0,
        "memoryless_return": 0.0,
        "episode_steps": "length + 1 (optimal), at most time_budget = 2 * (length + 1)",
        "description": "Passive T-maze: cue at the first step, walk the corridor, turn.",
    },
    "recurrl/CueRecall-v0": {
        "memory": "hold num_bits bits through noise",
        "difficulty": {"num_bits": 4, "delay": 10},
        "difficulty_bounds": {"num_bits": "1 to 64", "delay": ">= 0"},
        "optimal_return": 1.0,
        "memoryless_return": 0.0,
        "episode_steps": "delay + 2",
        "description": "Random bits shown once, distractor noise, then a query for one bit.",
    },
    "recurrl/RepeatPrevious-v0": {
        "memory": "sliding window of the last lag",
        "difficulty": {"num_symbols": 4, "lag": 3, "length": 32},
        "difficulty_bounds": {"num_symbols": ">= 2", "lag": ">= 1", "length": "> lag"},
        "optimal_return": 1.0,
        "memoryless_return": -0.5,  # 2 / num_symbols - 1
        "episode_steps": "length",
        "description": "Random symbol stream; at every step name the one seen lag steps ago.",
    },
    "recurrl/SequenceRecall-v0": {
        "memory": "ordered sequence of symbols",
        "difficulty": {"length": 5, "num_symbols": 4},
        "difficulty_bounds": {"length": ">= 1", "num_symbols": ">= 2"},
        "optimal_return": 1.0,
        "memoryless_return": -0.5,  # 2 / num_symbols - 1
        "episode_steps": "2 * length",
        "description": "length symbols shown one by one, then reproduced in order.",
    },
    "recurrl/MemoryGrid-v0": {
        "memory": "visual cue across navigation",
        "difficulty": {"length": 6, "view": 5, "num_colors": 2, "time_budget": None},
        "difficulty_bounds": {
            "length": ">= max(1, view - 3)",
            "view": "odd, >= 3",
            "num_colors": ">= 2",
            "time_budget": ">= 1; None = 8 * (length + 2)",
        },
        "optimal_return": 1.0,
        "memoryless_return": 0.0,
        "episode_steps": "length + 2 (optimal), at most time_budget = 8 * (length + 2)",
        "description": "Egocentric gridworld image: cue colour in the room, touch the match.",
    },
    "recurrl/Bandit-v0": {
        "memory": "learn arm values (meta-RL)",
        "difficulty": {"num_arms": 5, "horizon": 100, "observe_previous": True},
        "difficulty_bounds": {
            "num_arms": ">= 2",
            "horizon": ">= 1",
            "observe_previous": "true or false",
        },
        "optimal_return": 0.833,  # oracle arm: num_arms / (num_arms + 1)
        "memoryless_return": 0.68,  # win-stay lose-shift, measured; random policy 0.5
        "episode_steps": "horizon",
        "description": "Bernoulli bandit redrawn per episode; obs = previous action, reward.",
    },
    "recurrl/PointRecall-v0": {
        "memory": "continuous goal, reached blind",
        "difficulty": {"delay": 0, "travel_steps": 12, "max_speed": 0.1},
        "difficulty_bounds": {
            "delay": ">= 0",
            "travel_steps": "travel_steps * max_speed >= 0.9",
            "max_speed": "> 0",
        },
        "optimal_return": 1.0,
        "memoryless_return": 0.0,
        "episode_steps": "1 + delay + travel_steps",
        "description": "2-D goal shown once; steer to it with velocity commands (Box actions).",
    },
}

_SUITE = {
    # Name -> (module, reward_threshold): thresholds a memoryless policy cannot reach.
    "TMaze": ("tmaze", 0.9),
    "CueRecall": ("cue_recall", 0.9),
    "RepeatPrevious": ("repeat_previous", 0.9),
    "SequenceRecall": ("sequence_recall", 0.9),
    "MemoryGrid": ("memory_grid", 0.9),
    "Bandit": ("bandit", 0.72),
    "PointRecall": ("point_recall", 0.8),
}


def _register(env_id: str, **kwargs: Any) -> None:
    if env_id not in registry:
        register(id=env_id, **kwargs)


_register(
    "recurrl/CartPoleNoVelocity-v0",
    entry_point="recurrl.envs.wrappers:cartpole_no_velocity",
    vector_entry_point="recurrl.envs.cartpole:CartPoleNoVelocityVectorEnv",
    max_episode_steps=500,
    reward_threshold=475.0,
)
_register(
    "recurrl/PendulumNoVelocity-v0",
    entry_point="recurrl.envs.wrappers:pendulum_no_velocity",
    max_episode_steps=200,
)
for _name, (_module, _threshold) in _SUITE.items():
    _register(
        f"recurrl/{_name}-v0",
        entry_point=f"recurrl.envs.{_module}:{_name}Env",
        vector_entry_point=f"recurrl.envs.{_module}:{_name}VectorEnv",
        reward_threshold=_threshold,
    )
    ENVIRONMENTS[f"recurrl/{_name}-v0"]["reward_threshold"] = _threshold
