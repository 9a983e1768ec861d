"""API tests of the memory suite: Gymnasium checks, vector contract, seeding, parity."""

from __future__ import annotations

import inspect
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from recurrl import envs

SUITE = [
    "recurrl/TMaze-v0",
    "recurrl/CueRecall-v0",
    "recurrl/RepeatPrevious-v0",
    "recurrl/SequenceRecall-v0",
    "recurrl/MemoryGrid-v0",
    "recurrl/Bandit-v0",
    "recurrl/PointRecall-v0",
]
# Small settings whose episodes are short, so a few hundred steps cover many episodes.
SMALL = {
    "recurrl/TMaze-v0": {"length": 3},
    "recurrl/CueRecall-v0": {"num_bits": 12, "delay": 3},
    "recurrl/RepeatPrevious-v0": {"lag": 2, "length": 9},
    "recurrl/SequenceRecall-v0": {"length": 3},
    "recurrl/MemoryGrid-v0": {"length": 2, "time_budget": 12},
    "recurrl/Bandit-v0": {"horizon": 7},
    "recurrl/PointRecall-v0": {"delay": 1, "travel_steps": 5, "max_speed": 0.2},
}


def random_actions(space: gym.Space, steps: int, seed: int) -> list[np.ndarray]:
    """Valid batched actions; Box actions overshoot the bounds to exercise clipping."""
    space.seed(seed)
    actions = [space.sample() for _ in range(steps)]
    if isinstance(space, gym.spaces.Box):
        actions = [1.5 * a for a in actions]
    return actions


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "env_id", [*SUITE, "recurrl/CartPoleNoVelocity-v0", "recurrl/PendulumNoVelocity-v0"]
)
def test_check_env_passes(env_id: str) -> None:
    env = gym.make(env_id)
    if env_id not in SUITE:  # a wrapper over a classic-control env: check it as made
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "wrapped env", infinite bounds: expected here
            check_env(env, skip_render_check=True)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium's checker reports problems as warnings
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", SUITE)
def test_environment_facts(env_id: str) -> None:
    facts = envs.ENVIRONMENTS[env_id]
    spec = gym.spec(env_id)
    assert spec.vector_entry_point is not None
    assert facts["reward_threshold"] == spec.reward_threshold
    assert facts["memoryless_return"] < spec.reward_threshold <= facts["optimal_return"]
    assert {"memory", "difficulty", "description", "episode_steps"} <= facts.keys()
    task_class = gym.make(env_id).unwrapped.task_class
    parameters = list(inspect.signature(task_class).parameters.values())[1:]  # after num_envs
    assert facts["difficulty"] == {p.name: p.default for p in parameters}


@pytest.mark.parametrize("env_id", SUITE)
def test_vector_env_contract(env_id: str) -> None:
    num_envs = 5
    vec = gym.make_vec(env_id, num_envs=num_envs, **SMALL[env_id])
    assert isinstance(vec, envs.core.TaskVectorEnv)  # the native one, not SyncVectorEnv
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    single = gym.make(env_id, **SMALL[env_id])
    assert vec.single_observation_space == single.observation_space
    assert vec.single_action_space == single.action_space
    assert vec.observation_space == batch_space(single.observation_space, num_envs)
    assert vec.action_space == batch_space(single.action_space, num_envs)
    # info: the autoreset entries on steps that end an episode, and the memory ground truth
    # (memory_target, memory_age) on every reset and step of the tasks that have one.
    memory = {"memory_target", "memory_age"} if vec.task.memory_classes else set()
    obs, info = vec.reset(seed=3)
    assert obs in vec.observation_space and info.keys() == memory
    ended = 0
    for actions in random_actions(vec.action_space, 60, seed=0):
        obs, reward, terminated, truncated, info = vec.step(actions)
        assert obs in vec.observation_space
        assert obs.dtype == vec.single_observation_space.dtype
        assert reward.shape == (num_envs,) and reward.dtype == np.float64
        assert terminated.dtype == truncated.dtype == np.bool_
        assert terminated.shape == truncated.shape == (num_envs,)
        done = terminated | truncated
        if done.any():
            assert info.keys() == memory | {"final_obs", "_final_obs"}
            assert_same(info["_final_obs"], done)
            assert info["final_obs"].shape == obs.shape
            for i in np.flatnonzero(done):
                assert info["final_obs"][i] in vec.single_observation_space
            ended += done.sum()
        else:
            assert info.keys() == memory
    assert ended > num_envs  # several episodes per copy


@pytest.mark.parametrize("env_id", SUITE)
def test_same_seed_same_trajectory(env_id: str) -> None:
    def vector_run(seed: int) -> list:
        vec = gym.make_vec(env_id, num_envs=3, **SMALL[env_id])
        out = [vec.reset(seed=seed)[0]]
        for actions in random_actions(vec.action_space, 40, seed=1):
            out += [x for x in vec.step(actions)[:4]]
        return out

    def single_run(seed: int) -> list:
        env = gym.make(env_id, **SMALL[env_id])
        out = [env.reset(seed=seed)[0]]
        for action in random_actions(env.action_space, 40, seed=1):
            obs, reward, terminated, truncated, _ = env.step(action)
            out += [obs, reward, terminated, truncated]
            if terminated or truncated:
                out.append(env.reset()[0])
        return out

    for run in (vector_run, single_run):
        first, second, other = run(11), run(11), run(12)
        for a, b in zip(first, second, strict=True):
            assert_same(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=False))


@pytest.mark.parametrize("env_id", SUITE)
def test_vector_copies_equal_single_envs(env_id: str) -> None:
    """Copy i of make_vec(...).reset(seed=s) runs exactly like make(...).reset(seed=s + i)."""
    num_envs, seed = 4, 21
    vec = gym.make_vec(env_id, num_envs=num_envs, **SMALL[env_id])
    singles = [gym.make(env_id, **SMALL[env_id]) for _ in range(num_envs)]
    memory = ("memory_target", "memory_age") if vec.task.memory_classes else ()

    def same_memory(info: dict, i: int, single_info: dict) -> None:
        """Copy i's memory entries equal the single env's (for the observation both return)."""
        assert single_info.keys() == set(memory)
        for key in memory:
            assert info[key][i] == single_info[key]

    obs, info = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        single_obs, single_info = env.reset(seed=seed + i)
        assert_same(obs[i], single_obs)
        same_memory(info, i, single_info)
    episodes = np.zeros(num_envs, dtype=int)
    for actions in random_actions(vec.action_space, 120, seed=5):
        obs, reward, terminated, truncated, info = vec.step(actions)
        for i, env in enumerate(singles):
            single_obs, single_reward, single_terminated, single_truncated, single_info = env.step(
                actions[i]
            )
            assert reward[i] == single_reward
            assert (terminated[i], truncated[i]) == (single_terminated, single_truncated)
            if single_terminated or single_truncated:
                assert info["_final_obs"][i]
                assert_same(info["final_obs"][i], single_obs)
                single_obs, single_info = env.reset()  # SAME_STEP: info describes this one
                episodes[i] += 1
            assert_same(obs[i], single_obs)
            same_memory(info, i, single_info)
    assert episodes.min() >= 3


@pytest.mark.parametrize("env_id", SUITE)
def test_unseeded_reset_continues_like_single_envs(env_id: str) -> None:
    vec = gym.make_vec(env_id, num_envs=2, **SMALL[env_id])
    singles = [gym.make(env_id, **SMALL[env_id]) for _ in range(2)]
    vec.reset(seed=4)
    for i, env in enumerate(singles):
        env.reset(seed=4 + i)
    for _ in range(3):  # new episodes without a seed follow each copy's own stream
        obs, _ = vec.reset()
        for i, env in enumerate(singles):
            assert_same(obs[i], env.reset()[0])


def test_vector_time_limit_matches_time_limit_wrapper() -> None:
    env_id, limit = "recurrl/TMaze-v0", 4
    vec = gym.make_vec(env_id, num_envs=2, max_episode_steps=limit)
    single = gym.make(env_id, max_episode_steps=limit)
    vec.reset(seed=0)
    single.reset(seed=0)
    for t in range(1, 2 * limit + 1):
        _, _, terminated, truncated, _ = vec.step(np.array([0, 0]))
        _, _, single_terminated, single_truncated, _ = single.step(0)
        assert (terminated[0], truncated[0]) == (single_terminated, single_truncated)
        assert truncated[0] == (t % limit == 0)
        if single_truncated:
            single.reset()


def test_reset_mask_resets_only_masked_copies() -> None:
    vec = gym.make_vec("recurrl/SequenceRecall-v0", num_envs=3)
    vec.reset(seed=0)
    vec.step(np.zeros(3, dtype=np.int64))
    stepped = vec.step(np.zeros(3, dtype=np.int64))[0]
    mask = np.array([False, True, False])
    obs, _ = vec.reset(seed=0, options={"reset_mask": mask})
    first, _ = gym.make_vec("recurrl/SequenceRecall-v0", num_envs=3).reset(seed=0)
    assert_same(obs[1], first[1])
    assert_same(obs[[0, 2]], stepped[[0, 2]])
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": [True, False, True]})


def test_list_of_seeds_keys_each_copy() -> None:
    vec = gym.make_vec("recurrl/CueRecall-v0", num_envs=2)
    obs, _ = vec.reset(seed=[40, 7])
    assert_same(obs[1], gym.make("recurrl/CueRecall-v0").reset(seed=7)[0])
    assert_same(obs[0], gym.make("recurrl/CueRecall-v0").reset(seed=40)[0])


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("recurrl/TMaze-v0", {"length": 0}),
        ("recurrl/CueRecall-v0", {"num_bits": 65}),
        ("recurrl/RepeatPrevious-v0", {"lag": 5, "length": 5}),
        ("recurrl/SequenceRecall-v0", {"num_symbols": 1}),
        ("recurrl/MemoryGrid-v0", {"view": 4}),
        ("recurrl/MemoryGrid-v0", {"view": 7, "length": 3}),
        ("recurrl/Bandit-v0", {"num_arms": 1}),
        ("recurrl/PointRecall-v0", {"travel_steps": 2}),
    ],
)
def test_bad_difficulty_is_refused(env_id: str, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        gym.make(env_id, **kwargs)


def test_counter_random_numbers_are_uniform() -> None:
    keys = envs.core.seed_keys(np.arange(20000))
    values = envs.core.uniform(envs.core.draw(keys, 3))
    assert abs(values.mean() - 0.5) < 0.01 and abs(values.var() - 1 / 12) < 0.005
    counts = np.bincount(envs.core.below(envs.core.draw(keys, 4), 5), minlength=5)
    assert counts.min() > 3700 and counts.max() < 4300


def test_bandit_without_previous_in_observation() -> None:
    """``observe_previous=False``: constant observations, the same rewards for the same seed."""
    plain = gym.make_vec("recurrl/Bandit-v0", num_envs=3, horizon=5)
    blind = gym.make_vec("recurrl/Bandit-v0", num_envs=3, horizon=5, observe_previous=False)
    assert blind.single_observation_space.shape == (1,)
    plain.reset(seed=2)
    obs, _ = blind.reset(seed=2)
    assert not obs.any()
    for actions in random_actions(plain.action_space, 12, seed=3):
        plain_out, blind_out = plain.step(actions), blind.step(actions)
        assert not blind_out[0].any()
        for a, b in zip(plain_out[1:4], blind_out[1:4], strict=True):
            assert_same(a, b)
