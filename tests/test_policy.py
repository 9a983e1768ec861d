"""Policy construction, acting in a plain Gymnasium loop, checkpoints and load_policy."""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest
import torch

import recurrl
from recurrl.config import PolicyConfig, load_config, to_dict
from recurrl.policy import ActorCritic
from recurrl.run.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from recurrl.run.train import train


@pytest.mark.parametrize("core", ["lstm", "gru", "none"])
@pytest.mark.parametrize("shared_core", [True, False])
def test_act_in_plain_gymnasium_loop(core, shared_core):
    env = gym.make("recurrl/CartPoleNoVelocity-v0")
    policy = ActorCritic(
        env.observation_space, env.action_space, PolicyConfig(core=core, shared_core=shared_core)
    )
    obs, _ = env.reset(seed=0)
    state, episode_start = None, True
    for _ in range(30):
        action, state = policy.act(obs, state, episode_start)
        assert env.action_space.contains(action)
        obs, _, terminated, truncated, _ = env.step(action)
        episode_start = terminated or truncated
        if episode_start:
            obs, _ = env.reset()
    expected_tensors = {"lstm": 2, "gru": 1, "none": 0}[core] * (1 if shared_core else 2)
    assert len(state) == expected_tensors


def test_act_batched_matches_single_and_resets():
    torch.manual_seed(0)
    env = gym.make("recurrl/CartPoleNoVelocity-v0")
    policy = ActorCritic(env.observation_space, env.action_space)
    obs = np.stack([env.observation_space.sample() for _ in range(5)])
    batch_action, batch_state = policy.act(obs, None, True, deterministic=True)
    for i in range(5):
        action, state = policy.act(obs[i], None, True, deterministic=True)
        assert action == batch_action[i]
        torch.testing.assert_close(state[0][:, 0], batch_state[0][:, i])
    # episode_start=True must make the carried state irrelevant.
    _, fresh = policy.act(obs, None, True)
    _, reset = policy.act(obs, batch_state, np.ones(5, dtype=bool))
    torch.testing.assert_close(fresh[0], reset[0])


def test_gaussian_head_clips_for_env_and_scores_unclipped_sample():
    env = gym.make("recurrl/PendulumNoVelocity-v0")
    policy = ActorCritic(env.observation_space, env.action_space, PolicyConfig(log_std_init=2.0))
    obs = torch.zeros(64, 2)
    out = policy.step(obs, policy.initial_state(64), torch.ones(64))
    assert out.action.abs().max() > 2.0  # std e^2: samples exceed the bounds of [-2, 2]
    env_action = policy.head.to_env(out.action.numpy())
    assert env_action.shape == (64, 1) and np.abs(env_action).max() <= 2.0
    dist, _, _ = policy(obs[None], policy.initial_state(64), torch.ones(1, 64))
    expected = dist.log_prob(out.action[None]).sum(-1)[0]
    torch.testing.assert_close(out.log_prob, expected)


def test_load_policy_round_trip(tiny_overrides):
    result = train(load_config("experiments/quickstart.yaml", tiny_overrides), quiet=True)
    for path in (result.run_dir, result.run_dir / "checkpoints" / "final.pt"):
        loaded = recurrl.load_policy(path)
        obs = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
        a, _ = loaded.act(obs, None, True, deterministic=True)
        b, _ = result.policy.act(obs, None, True, deterministic=True)
        assert np.array_equal(a, b)
    torch.testing.assert_close(
        loaded.obs_normalizer.mean, result.policy.obs_normalizer.mean
    )  # normalisation statistics travel with the checkpoint


def test_checkpoint_refuses_pickled_code_and_garbage(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "recurrl-checkpoint", "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_checkpoint_is_refused_and_atomic_write_keeps_old(tmp_path):
    env = gym.make("recurrl/CartPoleNoVelocity-v0")
    policy = ActorCritic(env.observation_space, env.action_space)
    config = to_dict(load_config(None))
    path = save_checkpoint(tmp_path / "latest.pt", policy, config, 10)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "cut.pt")
    assert not (tmp_path / "latest.pt.tmp").exists()
    assert load_checkpoint(path)["global_step"] == 10


@pytest.mark.parametrize("padded", [False, True])
def test_categorical_matches_torch_distribution_bit_for_bit(padded):
    """The acting path's light Categorical gives torch's numbers, draws and gradients exactly."""
    from torch.distributions import Categorical as TorchCategorical

    from recurrl.policy.heads import Categorical

    torch.manual_seed(0)
    raw = torch.randn(5, 3, 4, dtype=torch.float64 if padded else torch.float32) * 3
    if padded:  # MultiCategorical padding and masked actions, as the heads make them
        raw = raw.clone()
        raw[..., -1] = torch.finfo(raw.dtype).min
        raw[0, 0, 1] = torch.finfo(raw.dtype).min / 2
    results = []
    for make in (lambda x: TorchCategorical(logits=x, validate_args=False), Categorical):
        logits = raw.clone().requires_grad_()
        dist = make(logits)
        torch.manual_seed(1)
        action = dist.sample()
        loss = (dist.log_prob(action) * torch.arange(3.0, dtype=raw.dtype)).sum()
        loss = loss + dist.entropy().sum()
        loss.backward()
        results.append((action, dist.log_prob(action), dist.entropy(), dist.probs, logits.grad))
    for ours, theirs in zip(results[1], results[0], strict=True):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def test_mlp_keeps_sequential_names_and_results():
    from recurrl.policy.encoders import MLP, mlp

    module, out_features = mlp(6, [5, 4], "tanh")
    assert isinstance(module, MLP) and out_features == 4
    assert list(module.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = torch.randn(3, 6)
    assert torch.equal(module(x), torch.nn.Sequential(*module)(x))
    assert torch.equal(mlp(6, [], "relu")[0](x), x)


@pytest.mark.parametrize(
    "options",
    [
        {"core": "lstm"},
        {"core": "gru", "num_layers": 2},
        {"core": "lstm", "shared_core": True, "prev_action": True, "prev_reward": True},
        {"core": "lstm", "layer_norm": True},
        {"core": "gru", "learned_initial_state": True},
        {"core": "none"},
    ],
    ids=["lstm", "gru-2-layers", "shared-previous", "layer-norm", "learned-initial", "none"],
)
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "grad"])
def test_step_equals_forward_over_one_step(options, grad):
    """Acting's one-step path (native kernels called directly inside ``policy.acting()``) gives
    forward's numbers exactly, resets included, for the action draw, log-prob, value and state."""

    env = gym.make("recurrl/CartPoleNoVelocity-v0")
    policy = ActorCritic(
        env.observation_space, env.action_space, PolicyConfig(hidden_size=12, **options)
    )
    torch.manual_seed(4)
    batch = 5
    state = tuple(torch.randn_like(s) for s in policy.initial_state(batch))
    obs, start = torch.randn(batch, 2), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    prev_action, prev_reward = torch.tensor([0, 1, 1, 0, 1]), torch.randn(batch)
    with torch.set_grad_enabled(grad), contextlib.nullcontext() if grad else policy.acting():
        torch.manual_seed(5)
        step = policy.step(obs, state, start, False, prev_action, prev_reward)
        value = policy.value(obs, state, start, prev_action, prev_reward)
        torch.manual_seed(5)
        dist, values, after = policy(
            obs[None], state, start[None], prev_action[None], prev_reward[None]
        )
        action = policy.head.sample(dist)
    assert torch.equal(step.action, action[0])
    assert torch.equal(step.log_prob, policy.head.log_prob(dist, action)[0])
    assert torch.equal(step.value, values[0]) and torch.equal(value, values[0])
    assert all(torch.equal(a, b) for a, b in zip(step.state, after, strict=True))
