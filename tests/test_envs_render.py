"""``render_mode="rgb_array"`` on the memory envs: pictures, no effect on the episode."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from recurrl.envs import tmaze
from recurrl.envs.core import TaskEnv

SHAPES = {  # of the pictures at the default difficulty
    "recurrl/TMaze-v0": (48, 16 * 21, 3),
    "recurrl/CueRecall-v0": (32, 16 * 12, 3),
    "recurrl/RepeatPrevious-v0": (32, 16 * 32, 3),
    "recurrl/SequenceRecall-v0": (32, 16 * 10, 3),
    "recurrl/MemoryGrid-v0": (80, 16 * 12, 3),
    "recurrl/Bandit-v0": (108, 24 * 5, 3),
    "recurrl/PointRecall-v0": (160, 160, 3),
}
RENDERED = list(SHAPES)


def episode(env_id: str, render_mode: str | None, seed: int = 7, steps: int = 40):
    """Observations and rewards of one seeded run of random actions, and the frames drawn."""
    env = gym.make(env_id, render_mode=render_mode)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, rewards, frames = [obs], [], []
    for _ in range(steps):
        if render_mode:
            frames.append(env.render())
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    return observations, rewards, frames


@pytest.mark.parametrize("env_id", RENDERED)
def test_frames_are_uint8_pictures_of_a_fixed_size(env_id):
    _, _, frames = episode(env_id, "rgb_array")
    assert {frame.shape for frame in frames} == {SHAPES[env_id]}
    assert all(frame.dtype == np.uint8 for frame in frames)
    assert len({frame.tobytes() for frame in frames}) > 1  # the picture follows the episode


@pytest.mark.parametrize("env_id", RENDERED)
def test_rendering_changes_nothing_in_the_episode(env_id):
    plain = episode(env_id, None)
    drawn = episode(env_id, "rgb_array")
    for a, b in zip(plain[0], drawn[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain[1] == drawn[1]


@pytest.mark.parametrize("env_id", RENDERED)
def test_gymnasium_checks_the_render_mode(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, render_mode="rgb_array").unwrapped)


def test_tmaze_picture_shows_agent_cue_and_goal_arm():
    env = gym.make("recurrl/TMaze-v0", length=3, render_mode="rgb_array")
    env.reset(seed=0)
    goal = env.unwrapped.task.goal[0]
    first = env.render()  # (48, 64, 3)
    lamp_row = 0 if goal == tmaze.UP else 2
    assert tuple(first[lamp_row * 16 + 8, 8]) == tmaze.LAMP
    assert tuple(first[lamp_row * 16 + 8, 3 * 16 + 8]) == tmaze.GOAL_ARM
    assert tuple(first[16 + 8, 8]) == tmaze.AGENT  # the agent at cell 0
    env.step(0)
    second = env.render()
    assert tuple(second[lamp_row * 16 + 8, 8]) == tmaze.WALL  # the cue is gone
    assert tuple(second[16 + 8, 16 + 8]) == tmaze.AGENT


def test_every_memory_task_draws_pictures():
    from recurrl import envs

    memory_tasks = [i for i in envs.ENVIRONMENTS if gym.spec(i).vector_entry_point]
    assert set(memory_tasks) - {"recurrl/CartPoleNoVelocity-v0"} == set(RENDERED)


def test_an_env_that_draws_nothing_refuses_the_render_mode():
    class Blind(TaskEnv):
        task_class = tmaze.TMaze

    with pytest.raises(ValueError, match="render_mode 'rgb_array' is not one of this env's"):
        Blind(render_mode="rgb_array")
