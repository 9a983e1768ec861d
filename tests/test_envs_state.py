"""Exact resume of the native memory envs: ``get_state`` / ``set_state`` and a resumed run."""

from __future__ import annotations

import io
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch

from recurrl import envs
from recurrl.app.cli import main
from recurrl.config import load_config
from recurrl.run.checkpoints import load_checkpoint
from recurrl.run.resume import StatefulVectorEnv, env_state, restore_env_state
from recurrl.run.run_dir import read_metrics
from recurrl.run.train import Trainer, train

# Small difficulties so that episodes end (and autoreset) within the few steps stepped here.
NATIVE = {
    "recurrl/TMaze-v0": {"length": 3},
    "recurrl/CueRecall-v0": {"num_bits": 3, "delay": 2},
    "recurrl/RepeatPrevious-v0": {"lag": 2, "length": 5},
    "recurrl/SequenceRecall-v0": {"length": 2},
    "recurrl/MemoryGrid-v0": {"length": 2, "view": 3},
    "recurrl/Bandit-v0": {"num_arms": 3, "horizon": 4},
    "recurrl/PointRecall-v0": {"travel_steps": 9},
}
NUM_ENVS, BEFORE, AFTER = 5, 11, 13


def test_every_native_env_is_listed():
    native = {i for i in envs.ENVIRONMENTS if gym.spec(i).vector_entry_point is not None}
    # CartPoleNoVelocity's state is tested in test_envs_cartpole.py (its single env is
    # Gymnasium's CartPoleEnv, which has no get_state).
    assert native == set(NATIVE) | {"recurrl/CartPoleNoVelocity-v0"}


def through_checkpoint(state):
    """``state`` as resume stores it: plain data, ``torch.save`` and ``weights_only`` load."""
    buffer = io.BytesIO()
    torch.save({"envs": env_state(state)}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["envs"]


class Holder:
    """Wraps a state so :func:`env_state` (which asks an env for it) can convert it."""

    def __init__(self, state):
        self.state = state

    def get_state(self):
        return self.state

    def set_state(self, state):
        self.state = state


def run(env, actions):
    """Outputs of stepping ``env`` with ``actions`` (obs, rewards, flags, final_obs)."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info.get("final_obs")))
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b, strict=True):
        for x, y in zip(step_a, step_b, strict=True):
            if x is None or y is None:
                assert x is None and y is None
            else:
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("seeded", [True, False], ids=["seeded", "unseeded"])
@pytest.mark.parametrize("env_id", sorted(NATIVE))
def test_vector_env_continues_exactly_from_its_state(env_id, seeded):
    kwargs = NATIVE[env_id]
    env = gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(env, StatefulVectorEnv)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(BEFORE + AFTER + 3)]
    env.reset(seed=7 if seeded else None)
    run(env, actions[:BEFORE])
    state = through_checkpoint(Holder(env.get_state()))
    expected = run(env, actions[BEFORE : BEFORE + AFTER])
    # A manual partial reset draws from np_random when the env was never seeded.
    mask = np.arange(NUM_ENVS) % 2 == 0
    expected_reset = env.reset(options={"reset_mask": mask})[0]
    expected_tail = run(env, actions[-3:])

    fresh = gym.make_vec(
        env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", **kwargs
    )
    assert restore_env_state(fresh, state)
    assert_same(run(fresh, actions[BEFORE : BEFORE + AFTER]), expected)
    np.testing.assert_array_equal(fresh.reset(options={"reset_mask": mask})[0], expected_reset)
    assert_same(run(fresh, actions[-3:]), expected_tail)


@pytest.mark.parametrize("env_id", sorted(NATIVE))
def test_single_env_continues_exactly_from_its_state(env_id):
    env = gym.make(env_id, **NATIVE[env_id]).unwrapped
    env.action_space.seed(1)
    actions = [env.action_space.sample() for _ in range(BEFORE + AFTER)]

    def play(env, actions):
        out = []
        for action in actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            out.append((obs, np.float64(reward), terminated, truncated, None))
            if terminated or truncated:
                out.append((env.reset()[0], 0.0, False, False, None))
        return out

    env.reset()  # unseeded: the first episode's key comes from np_random
    play(env, actions[:BEFORE])
    state = env.get_state()
    expected = play(env, actions[BEFORE:])
    fresh = gym.make(env_id, **NATIVE[env_id]).unwrapped
    fresh.set_state(state)
    assert_same(play(fresh, actions[BEFORE:]), expected)


def test_set_state_refuses_another_num_envs():
    env = gym.make_vec("recurrl/TMaze-v0", num_envs=3, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    other = gym.make_vec("recurrl/TMaze-v0", num_envs=4, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match="shape"):
        other.set_state(env.get_state())


TMAZE_OVERRIDES = [
    "env.id=recurrl/TMaze-v0",
    "env.kwargs={length: 3}",
    "env.num_envs=4",
    "device=cpu",
    "seed=5",
    "ppo.total_steps=640",  # 5 updates of 128 steps
    "ppo.rollout_len=32",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=2",
    "ppo.ent_coef=0.01",
    "policy.hidden_size=16",
    "policy.encoder_sizes=[16]",
    "eval.every=256",
    "eval.episodes=4",
    "run.checkpoint_every=128",
]


CARTPOLE_OVERRIDES = [
    "env.id=recurrl/CartPoleNoVelocity-v0",
    "env.num_envs=4",
    "device=cpu",
    "seed=3",
    "ppo.total_steps=640",  # 5 updates of 128 steps
    "ppo.rollout_len=32",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=2",
    "policy.hidden_size=16",
    "policy.encoder_sizes=[16]",
    "eval.every=256",
    "eval.episodes=2",
    "run.checkpoint_every=128",
]


@pytest.mark.parametrize(
    "overrides", [TMAZE_OVERRIDES, CARTPOLE_OVERRIDES], ids=["tmaze", "cartpole"]
)
def test_interrupted_run_resumes_bit_identically(overrides, tmp_path, monkeypatch):
    train(load_config(None, overrides + [f"run.dir={tmp_path / 'a'}"]), quiet=True)
    original = Trainer.train_one_update

    def train_one_update(self, number):  # SIGTERM during update 2 (of 5), as a user would
        metrics = original(self, number)
        if number == 2:
            signal.raise_signal(signal.SIGTERM)
        return metrics

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_one_update", train_one_update)
        stopped = train(load_config(None, overrides + [f"run.dir={tmp_path / 'b'}"]), True)
    assert stopped.interrupted == signal.SIGTERM and stopped.global_step == 256
    latest = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")
    assert latest["training"]["envs"] is not None  # the native env handed over its state
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet"]) == 0

    final_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "final.pt")
    final_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "final.pt")
    for key, value in final_a["policy"].items():
        assert torch.equal(value, final_b["policy"][key]), key
    timing = {"sps", "time_s", "rollout_s", "update_s"}
    metrics_a, metrics_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [m["global_step"] for m in metrics_b] == [128 * i for i in range(1, 6)]
    strip = [{k: v for k, v in m.items() if k not in timing} for m in metrics_a]
    assert strip == [{k: v for k, v in m.items() if k not in timing} for m in metrics_b]
