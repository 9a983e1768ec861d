"""The collector and evaluation read a vector env's autoreset mode in one place and refuse any
mode they cannot step through (instead of treating it as SAME_STEP)."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.vector import AutoresetMode

from recurrl.algo.evaluate import evaluate
from recurrl.algo.make_env import autoreset_is_next_step
from recurrl.algo.rollout import Collector
from recurrl.config import ConfigError, EnvConfig
from recurrl.policy import ActorCritic


class ModeVectorEnv(gym.vector.SyncVectorEnv):
    """CartPole copies whose metadata declares ``autoreset_mode`` as given (``None``: no key)."""

    def __init__(self, num_envs: int = 2, mode=AutoresetMode.SAME_STEP) -> None:
        super().__init__(
            [lambda: gym.make("CartPole-v1")] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP
        )
        self.metadata = {k: v for k, v in self.metadata.items() if k != "autoreset_mode"}
        if mode is not None:
            self.metadata["autoreset_mode"] = mode


gym.register("recurrl_test/AutoresetMode-v0", vector_entry_point=ModeVectorEnv)


@pytest.mark.parametrize(
    ("mode", "next_step"),
    [
        (AutoresetMode.NEXT_STEP, True),
        ("NextStep", True),
        (None, True),  # Gymnasium's default
        (AutoresetMode.SAME_STEP, False),
        ("SameStep", False),
    ],
)
def test_known_modes(mode, next_step):
    assert autoreset_is_next_step(ModeVectorEnv(mode=mode)) is next_step


@pytest.mark.parametrize("mode", [AutoresetMode.DISABLED, "Bogus", 3])
def test_collector_refuses_an_unknown_mode(mode):
    envs = ModeVectorEnv(mode=mode)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
    value = getattr(mode, "value", mode)
    with pytest.raises(ConfigError, match=rf"env.id: my/Env-v0 autoresets in mode {value!r}"):
        Collector(envs, policy, 8, 4, env_id="my/Env-v0")


@pytest.mark.filterwarnings("ignore:.*metadata\\['autoreset_mode'\\] is not an instance")
def test_evaluation_refuses_an_unknown_mode():
    envs = ModeVectorEnv()
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
    config = EnvConfig(id="recurrl_test/AutoresetMode-v0", kwargs={"mode": "Bogus"})
    with pytest.raises(ConfigError, match="AutoresetMode-v0 autoresets in mode 'Bogus'"):
        evaluate(policy, config, episodes=2)
    for mode in ("NextStep", "SameStep"):  # both known modes finish their episodes
        config = EnvConfig(id="recurrl_test/AutoresetMode-v0", kwargs={"mode": mode})
        assert len(evaluate(policy, config, episodes=2)) == 2
