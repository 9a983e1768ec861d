"""The memory ground truth in ``info``: ``memory_target`` is what the agent must remember,
``memory_age`` how many steps ago it was shown, both for the observation returned with them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from recurrl.envs.tmaze import FORWARD, UP

WITH_MEMORY = {
    "recurrl/TMaze-v0": {"length": 3},
    "recurrl/CueRecall-v0": {"num_bits": 3, "delay": 2},
    "recurrl/RepeatPrevious-v0": {"lag": 2, "length": 7},
    "recurrl/SequenceRecall-v0": {"length": 3},
    "recurrl/PointRecall-v0": {"delay": 1, "travel_steps": 5, "max_speed": 0.2},
}

SLIDING = ("recurrl/RepeatPrevious-v0", "recurrl/SequenceRecall-v0")


def shown_target(env_id: str, obs: np.ndarray) -> np.ndarray:
    """The target read off observations ``[N, ...]`` that show it (age 0)."""
    if env_id == "recurrl/TMaze-v0":
        return np.argmax(obs[:, :2], axis=1)  # [cue up, cue down, junction]
    if env_id == "recurrl/CueRecall-v0":
        return obs[:, 0].astype(np.int64)  # the first cue bit
    if env_id in SLIDING:
        return np.argmax(obs[:, :4], axis=1)  # the symbol one-hot
    x, y = obs[:, 2], obs[:, 3]  # PointRecall: the goal, shown with the cue flag
    return np.select([(x >= 0) & (y >= 0), x < 0, (x >= 0) & (y < 0)], [0, 1 + (y < 0), 3])


@pytest.mark.parametrize("env_id", WITH_MEMORY)
def test_target_is_shown_at_age_zero_and_held_until_shown_again(env_id: str) -> None:
    """Every reset and step returns ``[N]`` int64 targets in ``[0, memory_classes)``; at age 0
    the observation shows the target; the age grows by one per step while the target stays,
    and restarts at 0 with the first observation of an episode (SAME_STEP autoreset)."""
    num_envs = 6
    vec = gym.make_vec(env_id, num_envs=num_envs, **WITH_MEMORY[env_id])
    classes = vec.task.memory_classes
    obs, info = vec.reset(seed=1)
    ended = np.ones(num_envs, dtype=bool)
    vec.action_space.seed(2)
    for _ in range(40):
        target, age = info["memory_target"], info["memory_age"]
        assert target.shape == age.shape == (num_envs,)
        assert target.dtype == age.dtype == np.int64
        assert ((0 <= target) & (target < classes)).all() and (age >= 0).all()
        assert (age[ended] == 0).all()
        fresh = age == 0
        np.testing.assert_array_equal(target[fresh], shown_target(env_id, obs[fresh]))
        obs, _, terminated, truncated, next_info = vec.step(vec.action_space.sample())
        ended = terminated | truncated
        older = ~ended & (next_info["memory_age"] == age + 1)
        # RepeatPrevious and SequenceRecall hold the age at lag / length and move on to the
        # next symbol; the others keep one target for the whole episode.
        moved_on = ~ended & (next_info["memory_age"] == age) & (env_id in SLIDING)
        assert (older | moved_on | ended).all()
        np.testing.assert_array_equal(next_info["memory_target"][older], target[older])
        info = next_info


def test_tmaze_target_is_the_goal_and_age_the_elapsed_steps() -> None:
    vec = gym.make_vec("recurrl/TMaze-v0", num_envs=4, length=3)
    _, info = vec.reset(seed=0)
    for _ in range(30):
        np.testing.assert_array_equal(info["memory_target"], vec.task.goal - UP)
        np.testing.assert_array_equal(info["memory_age"], vec.task.elapsed)
        _, _, _, _, info = vec.step(vec.action_space.sample())


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("recurrl/RepeatPrevious-v0", {"lag": 3, "length": 9}),
        ("recurrl/SequenceRecall-v0", {"length": 4}),
    ],
)
def test_naming_the_target_scores_the_optimal_return(env_id: str, kwargs: dict) -> None:
    """The target is the symbol to name at this step: answering it every step returns 1."""
    vec = gym.make_vec(env_id, num_envs=5, **kwargs)
    _, info = vec.reset(seed=3)
    returns, finished = np.zeros(5), np.zeros(5, dtype=bool)
    while not finished.all():
        _, reward, terminated, truncated, info = vec.step(info["memory_target"])
        returns += np.where(finished, 0.0, reward)
        finished |= terminated | truncated
    np.testing.assert_allclose(returns, 1.0)


def test_tmaze_turning_to_the_target_scores_the_optimal_return() -> None:
    length = 4
    vec = gym.make_vec("recurrl/TMaze-v0", num_envs=5, length=length)
    _, info = vec.reset(seed=4)
    returns = np.zeros(5)
    for _ in range(length + 1):  # walk `length` cells, turn at the junction
        turn = info["memory_age"] == length
        actions = np.where(turn, UP + info["memory_target"], FORWARD)
        _, reward, _, _, info = vec.step(actions)
        returns += reward
    np.testing.assert_allclose(returns, 1.0)


@pytest.mark.parametrize("env_id", ["recurrl/Bandit-v0", "recurrl/MemoryGrid-v0"])
def test_envs_without_a_memory_target_leave_it_out(env_id: str) -> None:
    vec = gym.make_vec(env_id, num_envs=2)
    assert vec.task.memory_classes == 0
    assert vec.reset(seed=0)[1] == {}
    assert "memory_target" not in vec.step(vec.action_space.sample())[4]
    assert gym.make(env_id).reset(seed=0)[1] == {}
