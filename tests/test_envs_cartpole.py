"""CartPoleNoVelocity's native vector env (``envs.cartpole``) against the single env.

Copy ``i`` of ``make_vec(id).reset(seed=s)`` must run exactly like ``make(id).reset(seed=s + i)``
(and the single env's later unseeded resets), so these tests compare with ``np.array_equal``:
the float64 physics does the single env's operations in its order, and NumPy's ``np.cos`` /
``np.sin`` of a contiguous row give the same bits as of the single env's scalars.
"""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from recurrl.algo.make_env import make_vector_env
from recurrl.config import EnvConfig
from recurrl.envs.cartpole import CartPoleNoVelocityVectorEnv
from recurrl.run.resume import StatefulVectorEnv, env_state, restore_env_state

ENV_ID = "recurrl/CartPoleNoVelocity-v0"


def random_actions(num_envs: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2, size=num_envs) for _ in range(steps)]


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_registered_as_the_vector_entry_point() -> None:
    spec = gym.spec(ENV_ID)
    assert spec.vector_entry_point == "recurrl.envs.cartpole:CartPoleNoVelocityVectorEnv"
    assert spec.entry_point == "recurrl.envs.wrappers:cartpole_no_velocity"
    vec = gym.make_vec(ENV_ID, num_envs=3)
    assert isinstance(vec, CartPoleNoVelocityVectorEnv)
    assert vec.max_episode_steps == 500  # the spec's, passed by make_vec
    assert gym.make_vec(ENV_ID, num_envs=3, max_episode_steps=7).max_episode_steps == 7
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    single = gym.make(ENV_ID)
    assert vec.single_observation_space == single.observation_space
    assert vec.single_action_space == single.action_space == gym.spaces.Discrete(2)
    assert vec.observation_space == batch_space(single.observation_space, 3)
    assert vec.action_space == batch_space(single.action_space, 3)


def test_vector_env_contract() -> None:
    num_envs = 6
    vec = gym.make_vec(ENV_ID, num_envs=num_envs, max_episode_steps=15)
    obs, info = vec.reset(seed=3)
    assert obs in vec.observation_space and info == {}
    assert obs.dtype == np.float32 and obs.flags.c_contiguous
    ended = 0
    for actions in random_actions(num_envs, 200, seed=0):
        obs, reward, terminated, truncated, info = vec.step(actions)
        assert obs in vec.observation_space and obs.dtype == np.float32
        assert reward.shape == (num_envs,) and reward.dtype == np.float64
        assert np.all(reward == 1.0)  # every step, the terminating one included
        assert terminated.dtype == truncated.dtype == np.bool_
        assert terminated.shape == truncated.shape == (num_envs,)
        done = terminated | truncated
        if done.any():
            assert set(info) == {"final_obs", "_final_obs"}
            assert_same(info["_final_obs"], done)
            assert info["final_obs"].shape == obs.shape
            for i in np.flatnonzero(done):
                assert info["final_obs"][i] in vec.single_observation_space
                assert np.all(np.abs(obs[i]) <= 0.05)  # already the next episode's first obs
            for i in np.flatnonzero(terminated):
                x, theta = info["final_obs"][i]
                assert abs(x) > 2.4 or abs(theta) > 12 * 2 * np.pi / 360
            ended += done.sum()
        else:
            assert info == {}
    assert ended > 3 * num_envs


@pytest.mark.parametrize("limit", [25, 500])
def test_vector_copies_equal_single_envs(limit: int) -> None:
    """Copy i of reset(seed=s) runs exactly like make(id).reset(seed=s + i), then its autoresets.

    Observations, rewards, flags, final observations and the float64 state itself are equal,
    over several hundred steps and many episodes (truncated ones included with limit 25).
    """
    num_envs, seed = 5, 21
    vec = gym.make_vec(ENV_ID, num_envs=num_envs, max_episode_steps=limit)
    singles = [gym.make(ENV_ID, max_episode_steps=limit) for _ in range(num_envs)]
    obs, _ = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        assert_same(obs[i], env.reset(seed=seed + i)[0])
    terminations = truncations = 0
    for actions in random_actions(num_envs, 400, seed=5):
        obs, reward, terminated, truncated, info = vec.step(actions)
        for i, env in enumerate(singles):
            single_obs, single_reward, single_terminated, single_truncated, _ = env.step(
                int(actions[i])
            )
            assert reward[i] == single_reward
            assert (terminated[i], truncated[i]) == (single_terminated, single_truncated)
            if single_terminated or single_truncated:
                assert info["_final_obs"][i]
                assert_same(info["final_obs"][i], single_obs)
                single_obs, _ = env.reset()
            elif info:
                assert not info["_final_obs"][i]
            assert_same(obs[i], single_obs)
        assert_same(vec.state, np.stack([env.unwrapped.state for env in singles], axis=1))
        terminations += terminated.sum()
        truncations += truncated.sum()
    assert terminations > 3 * num_envs
    assert (truncations > num_envs) == (limit == 25)


def test_equals_gymnasiums_sync_vector_env() -> None:
    """The env it replaces in ``make_vector_env``: SyncVectorEnv in SAME_STEP mode."""
    num_envs, seed = 4, 0
    native = gym.make_vec(ENV_ID, num_envs=num_envs, max_episode_steps=30)
    sync = gym.make_vec(
        ENV_ID,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        max_episode_steps=30,
    )
    assert_same(native.reset(seed=seed)[0], sync.reset(seed=seed)[0])
    for actions in random_actions(num_envs, 300, seed=2):
        out, expected = native.step(actions), sync.step(actions)
        for a, b in zip(out[:4], expected[:4], strict=True):
            assert_same(a, b)
        no_end = np.zeros(num_envs, dtype=bool)
        ended = expected[4].get("_final_obs", no_end)  # SyncVectorEnv: absent, or a mask
        assert_same(out[4].get("_final_obs", no_end), ended)
        for i in np.flatnonzero(ended):
            assert_same(out[4]["final_obs"][i], expected[4]["final_obs"][i])


def test_same_seed_same_trajectory() -> None:
    def run(seed: int) -> list:
        vec = gym.make_vec(ENV_ID, num_envs=3, max_episode_steps=20)
        out = [vec.reset(seed=seed)[0]]
        for actions in random_actions(3, 100, seed=1):
            out += list(vec.step(actions)[:4])
        return out

    first, second, other = run(11), run(11), run(12)
    for a, b in zip(first, second, strict=True):
        assert_same(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_unseeded_resets_continue_like_single_envs() -> None:
    vec = gym.make_vec(ENV_ID, num_envs=2)
    singles = [gym.make(ENV_ID) for _ in range(2)]
    vec.reset(seed=4)
    for i, env in enumerate(singles):
        env.reset(seed=4 + i)
    for _ in range(3):  # new episodes without a seed follow each copy's own generator
        obs, _ = vec.reset()
        for i, env in enumerate(singles):
            assert_same(obs[i], env.reset()[0])


def test_seed_lists_masks_and_reset_bounds_follow_the_single_env() -> None:
    vec = gym.make_vec(ENV_ID, num_envs=3)
    obs, _ = vec.reset(seed=[40, 7, 9])
    assert_same(obs[1], gym.make(ENV_ID).reset(seed=7)[0])
    stepped, *_ = vec.step(np.array([0, 1, 0]))
    mask = np.array([False, True, False])
    obs, _ = vec.reset(seed=100, options={"reset_mask": mask})
    assert_same(obs[1], gym.make(ENV_ID).reset(seed=101)[0])
    assert_same(obs[[0, 2]], stepped[[0, 2]])
    bounds = {"low": -0.3, "high": 0.2}  # CartPoleEnv's reset options
    obs, _ = vec.reset(seed=5, options=bounds)
    assert_same(obs[2], gym.make(ENV_ID).reset(seed=7, options=bounds)[0])
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": [True, False, True]})


def test_sutton_barto_reward_like_the_single_env() -> None:
    vec = gym.make_vec(ENV_ID, num_envs=2, sutton_barto_reward=True)
    singles = [gym.make(ENV_ID, sutton_barto_reward=True) for _ in range(2)]
    vec.reset(seed=1)
    for i, env in enumerate(singles):
        env.reset(seed=1 + i)
    for actions in random_actions(2, 80, seed=3):
        _, reward, terminated, _, _ = vec.step(actions)
        for i, env in enumerate(singles):
            _, single_reward, single_terminated, single_truncated, _ = env.step(int(actions[i]))
            assert reward[i] == single_reward and terminated[i] == single_terminated
            if single_terminated or single_truncated:
                env.reset()
    assert set(np.unique(reward)) <= {0.0, -1.0}


def test_failure_at_the_time_limit_is_terminated_and_truncated_like_time_limit() -> None:
    """TimeLimit sets truncated at the limit step even when that step also terminates."""
    limit = 4
    vec = gym.make_vec(ENV_ID, num_envs=1, max_episode_steps=limit)
    single = gym.make(ENV_ID, max_episode_steps=limit)
    vec.reset(seed=0)
    single.reset(seed=0)
    for _ in range(limit - 1):
        vec.step(np.array([1]))
        single.step(1)
    falling = np.array([0.1, 0.0, 0.2, 3.0])  # the pole passes 12 degrees at the next step
    vec.state[:, 0] = falling
    single.unwrapped.state = falling.copy()
    _, _, terminated, truncated, info = vec.step(np.array([1]))
    single_obs, _, single_terminated, single_truncated, _ = single.step(1)
    assert (terminated[0], truncated[0]) == (single_terminated, single_truncated) == (True, True)
    assert_same(info["final_obs"][0], single_obs)


def test_bad_actions_are_refused() -> None:
    vec = gym.make_vec(ENV_ID, num_envs=2)
    with pytest.raises(gym.error.ResetNeeded):
        vec.step(np.array([0, 1]))
    vec.reset(seed=0)
    for bad in (np.array([0.0, 1.0]), np.array([0, 1, 1]), np.array(1)):
        with pytest.raises(ValueError, match="actions"):
            vec.step(bad)
    with pytest.raises(IndexError):
        vec.step(np.array([0, 2]))


def through_checkpoint(state):
    """``state`` as resume stores it: plain data, ``torch.save`` and ``weights_only`` load."""

    class Holder:
        def get_state(self):
            return state

        def set_state(self, state):
            raise AssertionError

    buffer = io.BytesIO()
    torch.save({"envs": env_state(Holder())}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["envs"]


def play(env, actions):
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info.get("final_obs")))
    return out


def assert_same_steps(a, b) -> None:
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b, strict=True):
        for x, y in zip(step_a, step_b, strict=True):
            if x is None or y is None:
                assert x is None and y is None
            else:
                assert_same(x, y)


@pytest.mark.parametrize("seeded", [True, False], ids=["seeded", "unseeded"])
def test_get_state_set_state_continues_exactly(seeded: bool) -> None:
    num_envs = 5
    env = gym.make_vec(ENV_ID, num_envs=num_envs, max_episode_steps=12)
    assert isinstance(env, StatefulVectorEnv)
    actions = random_actions(num_envs, 70, seed=4)
    env.reset(seed=7 if seeded else None)
    play(env, actions[:30])
    state = through_checkpoint(env.get_state())
    expected = play(env, actions[30:60])
    # A copy never seeded draws its generator from np_random at its first reset.
    mask = np.arange(num_envs) % 2 == 0
    expected_reset = env.reset(options={"reset_mask": mask})[0]
    expected_tail = play(env, actions[60:])
    assert sum(step[4] is not None for step in expected) > 3  # autoresets in between

    fresh = gym.make_vec(ENV_ID, num_envs=num_envs, max_episode_steps=12)
    assert restore_env_state(fresh, state)
    assert_same_steps(play(fresh, actions[30:60]), expected)
    assert_same(fresh.reset(options={"reset_mask": mask})[0], expected_reset)
    assert_same_steps(play(fresh, actions[60:]), expected_tail)


def test_set_state_refuses_another_num_envs() -> None:
    env = gym.make_vec(ENV_ID, num_envs=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        gym.make_vec(ENV_ID, num_envs=4).set_state(env.get_state())


def test_make_vector_env_picks_native_unless_wrapped_or_sync() -> None:
    assert isinstance(
        make_vector_env(EnvConfig(id=ENV_ID, num_envs=2)), CartPoleNoVelocityVectorEnv
    )
    native = make_vector_env(EnvConfig(id=ENV_ID, num_envs=2, vectorization="native"))
    assert isinstance(native, CartPoleNoVelocityVectorEnv) and native.max_episode_steps == 500
    flicker = [{"path": "recurrl.envs.wrappers:Flicker", "kwargs": {"p": 0.1}}]
    wrapped = make_vector_env(EnvConfig(id=ENV_ID, num_envs=2, wrappers=flicker))
    assert isinstance(wrapped, gym.vector.SyncVectorEnv)
    sync = make_vector_env(EnvConfig(id=ENV_ID, num_envs=2, vectorization="sync"))
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    assert sync.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
