"""Rollouts from device-resident envs (DeviceCollector) against the host collector, training
with env.vectorization=torch, its exact resume, and the CUDA-graph acting step on a GPU."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch

from recurrl.algo.device_rollout import DeviceCollector, DeviceRewardScaler, is_device_env
from recurrl.algo.returns import RewardScaler
from recurrl.algo.rollout import Collector
from recurrl.config import PolicyConfig, load_config
from recurrl.policy import ActorCritic
from recurrl.run.checkpoints import load_checkpoint
from recurrl.run.run_dir import read_metrics
from recurrl.run.train import train
from tests.conftest import interrupt_after, strip_timing

device_envs = pytest.importorskip("recurrl.envs.device")

ENVS = [
    ("recurrl/TMaze-v0", {"length": 3}),
    ("recurrl/RepeatPrevious-v0", {}),
    ("recurrl/CartPoleNoVelocity-v0", {}),
]
ENVS = [(env_id, kw) for env_id, kw in ENVS if env_id in device_envs.TORCH_VECTOR_ENVS]


def make_pair(env_id: str, kwargs: dict, num_envs: int = 6):
    import recurrl.envs  # noqa: F401 - registers the ids

    host = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )
    device = device_envs.make_torch_vector_env(env_id, num_envs, torch.device("cpu"), **kwargs)
    return host, device


@pytest.mark.parametrize("env_id, kwargs", ENVS, ids=[e for e, _ in ENVS])
@pytest.mark.parametrize("scale", [False, True], ids=["raw", "scaled"])
def test_device_rollouts_equal_host_rollouts(env_id, kwargs, scale):
    """Same env seed, policy and sampling stream: the same rollouts, step for step (on CPU)."""
    host_envs, dev_envs = make_pair(env_id, kwargs)
    assert is_device_env(dev_envs) and not is_device_env(host_envs)
    torch.manual_seed(0)
    config = PolicyConfig(hidden_size=8, encoder_sizes=[8], prev_action=True, prev_reward=True)
    policy = ActorCritic(host_envs.single_observation_space, host_envs.single_action_space, config)
    host_scaler = RewardScaler(6, 0.99) if scale else None
    dev_scaler = DeviceRewardScaler(6, 0.99, torch.device("cpu")) if scale else None
    twin = copy.deepcopy(policy)  # each collector folds rewards into its policy's statistics
    host = Collector(host_envs, policy, 16, 8, seed=5, reward_scaler=host_scaler)
    dev = DeviceCollector(dev_envs, twin, 16, 8, seed=5, reward_scaler=dev_scaler)
    assert not dev.capture  # CPU: eager
    ended = 0
    for rollout_number in range(4):
        torch.manual_seed(rollout_number)
        a = host.collect()
        torch.manual_seed(rollout_number)
        b = dev.collect()
        for name in (
            "obs",
            "actions",
            "rewards",
            "terminated",
            "truncated",
            "episode_start",
            "valid",
            "prev_actions",
            "prev_rewards",
            "log_probs",
            "values",
            "next_values",
        ):
            expected, got = getattr(a, name), getattr(b, name)
            torch.testing.assert_close(got.to(expected.dtype), expected, msg=name)
        for x, y in zip(a.chunk_states, b.chunk_states, strict=True):
            torch.testing.assert_close(y, x)
        assert b.episode_returns == pytest.approx(a.episode_returns)
        assert b.episode_lengths == a.episode_lengths
        ended += len(a.episode_returns)
    assert ended > 0


TORCH_TMAZE = [
    "env.id=recurrl/TMaze-v0",
    "env.kwargs={length: 3}",
    "env.vectorization=torch",
    "env.num_envs=8",
    "env.normalize_obs=true",
    "env.normalize_reward=true",
    "device=cpu",
    "seed=2",
    "ppo.total_steps=768",  # 6 updates of 128 steps
    "ppo.rollout_len=16",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=2",
    "policy.hidden_size=16",
    "policy.encoder_sizes=[16]",
    "run.checkpoint_every=256",
]


@pytest.mark.skipif(not ENVS or ENVS[0][0] != "recurrl/TMaze-v0", reason="no torch TMaze")
def test_training_on_device_envs_resumes_exactly(tmp_path, monkeypatch):
    from recurrl.app.cli import main

    train(load_config(None, TORCH_TMAZE + [f"run.dir={tmp_path / 'a'}"]), quiet=True)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        stopped = train(load_config(None, TORCH_TMAZE + [f"run.dir={tmp_path / 'b'}"]), True)
    assert stopped.global_step == 384
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet", "--eval-episodes=0"]) == 0
    final_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "final.pt")
    final_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "final.pt")
    for key, value in final_a["policy"].items():
        assert torch.equal(value, final_b["policy"][key]), key
    metrics_a, metrics_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert strip_timing(metrics_a) == strip_timing(metrics_b)
    assert any(m["episodic_return"] is not None for m in metrics_a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("env_id, kwargs", ENVS, ids=[e for e, _ in ENVS])
def test_cuda_graph_acting_computes_what_the_policy_computes(env_id, kwargs, monkeypatch):
    """The captured acting step's log-probs and values are the policy's own for the stored
    actions, replayed over the whole rollout from its first state (randomness aside)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    device = torch.device("cuda")
    envs = device_envs.make_torch_vector_env(env_id, 64, device, **kwargs)
    torch.manual_seed(0)
    config = PolicyConfig(hidden_size=32, prev_action=True, prev_reward=True)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space, config)
    collector = DeviceCollector(envs, policy.to(device), 32, 8, seed=3, capture=True)
    for _ in range(2):  # the second rollout replays the graph captured in the first
        rollout = collector.collect()
        assert collector.capture_note == "CUDA graph"
        with torch.no_grad():
            out = policy.evaluate_actions(
                rollout.obs,
                rollout.actions,
                tuple(s[0] for s in rollout.chunk_states),
                rollout.episode_start,
                rollout.prev_actions,
                rollout.prev_rewards,
            )
        torch.testing.assert_close(out.log_prob, rollout.log_probs, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.value, rollout.values, atol=1e-4, rtol=1e-4)


def test_cuda_and_cuda_0_are_one_device(monkeypatch):
    """A policy's parameters report ``cuda:0`` where the run asked for ``cuda`` (the first GPU
    run refused its own env for this)."""
    from recurrl.algo.device_rollout import same_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda"), torch.device("cuda:1"))
    assert not same_device(torch.device("cpu"), torch.device("cuda:0"))
    assert same_device(torch.device("cpu"), torch.device("cpu"))
