"""The one-call acting step (``recurrl.policy.acting``): the same numbers as the layer-by-layer
path bit for bit, over steps with resets and in whole rollouts; which policies get a program;
fresh weights in every ``frozen_weights`` block; the product routing it relies on."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from recurrl.algo.rollout import Collector
from recurrl.config import PolicyConfig
from recurrl.nn import matmul, native
from recurrl.nn.native import frozen_weights
from recurrl.policy import ActorCritic
from tests.test_host_buffers import fields

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.unavailable_reason()}"
)


def make_policy(**options) -> ActorCritic:
    torch.manual_seed(0)
    env = gym.make("recurrl/CartPoleNoVelocity-v0")
    config = PolicyConfig(hidden_size=options.pop("hidden_size", 24), **options)
    return ActorCritic(env.observation_space, env.action_space, config)


def act(policy: ActorCritic, steps: int, batch: int, program: bool, monkeypatch) -> list:
    """Outputs of ``steps`` acting steps (resets on some rows), with or without programs."""
    with monkeypatch.context() as patch:
        if not program:
            patch.setattr(ActorCritic, "_acting_program", lambda *args: None)
        generator = torch.Generator().manual_seed(1)
        state = policy.initial_state(batch)
        outputs = []
        with torch.inference_mode(), frozen_weights():
            for t in range(steps):
                obs = torch.randn(batch, 2, generator=generator)
                start = (torch.rand(batch, generator=generator) < 0.3).float()
                previous = (None, None)
                if policy.uses_previous:
                    previous = (
                        torch.randint(0, 2, (batch,), generator=generator),
                        torch.randn(batch, generator=generator),
                    )
                torch.manual_seed(t)
                out = policy.step(obs, state, start, False, *previous)
                state = out.state
                outputs.append((out.action, out.log_prob, out.value, *out.state))
    return outputs


@needs_native
@pytest.mark.parametrize(
    "options",
    [
        {"core": "lstm", "encoder_sizes": [], "head_sizes": [64, 64], "hidden_size": 128},
        {"core": "gru"},
        {"core": "lstm", "num_layers": 2, "head_sizes": []},
        {"core": "gru", "num_layers": 2, "shared_core": True},
        {"core": "lstm", "prev_action": True, "prev_reward": True, "activation": "relu"},
    ],
    ids=["sb3-lstm", "gru", "lstm-2-layers-no-mlp", "gru-2-layers-shared", "lstm-previous-relu"],
)
@pytest.mark.parametrize("batch", [1, 8, 13])
def test_program_acts_exactly_like_the_layers(options, batch, monkeypatch):
    policy = make_policy(**options)
    with torch.inference_mode(), frozen_weights():
        features = torch.zeros(batch, policy.actor_core.rnn.input_size)
        assert policy._acting_program(features, policy.initial_state(batch)) is not None
    ours = act(policy, 6, batch, True, monkeypatch)
    layers = act(policy, 6, batch, False, monkeypatch)
    for step, (a, b) in enumerate(zip(ours, layers, strict=True)):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), f"step {step}"


@needs_native
@pytest.mark.parametrize(
    "options",
    [{"layer_norm": True}, {"learned_initial_state": True}, {"core": "none"}],
    ids=["layer-norm", "learned-initial", "memoryless"],
)
def test_policies_the_kernels_cannot_run_act_layer_by_layer(options):
    policy = make_policy(**options)
    features = torch.zeros(4, policy.encoder.out_features)
    with torch.inference_mode(), frozen_weights():
        assert policy._acting_program(features, policy.initial_state(4)) is None


@needs_native
def test_programs_only_inside_frozen_blocks_without_autograd():
    policy = make_policy()
    state = policy.initial_state(3)
    features = torch.zeros(3, policy.actor_core.rnn.input_size)
    with torch.inference_mode():
        assert policy._acting_program(features, state) is None  # weights may change here
    with frozen_weights():
        assert policy._acting_program(features, state) is None  # autograd is recording
    double = make_policy().double()
    with torch.inference_mode(), frozen_weights():
        assert double._acting_program(features.double(), double.initial_state(3)) is None
        program = policy._acting_program(features, state)
        assert program is not None and policy._acting_program(features, state) is program
        assert policy._acting_program(torch.zeros(5, features.shape[1]), policy.initial_state(5))
        wrong_state = tuple(s[:, :2] for s in state)  # rows do not match: layer by layer
        assert policy._acting_program(features, wrong_state) is None


@needs_native
def test_each_block_records_the_current_weights(monkeypatch):
    """A program holds transposed copies of the weights: it must not outlive its block, where
    an optimizer may update the weights in place (fused Adam does not bump version counters)."""
    policy = make_policy()
    before = act(policy, 2, 4, True, monkeypatch)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.mul_(1.5)
    after = act(policy, 2, 4, True, monkeypatch)
    assert not torch.equal(before[-1][2], after[-1][2])  # the values moved
    layers = act(policy, 2, 4, False, monkeypatch)
    assert all(torch.equal(x, y) for x, y in zip(after[-1], layers[-1], strict=True))


@needs_native
@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_rollouts_are_the_same_with_and_without_programs(core, monkeypatch):
    def rollouts() -> list:
        torch.manual_seed(0)
        envs = gym.make_vec("recurrl/CartPoleNoVelocity-v0", num_envs=4)
        policy = ActorCritic(
            envs.single_observation_space,
            envs.single_action_space,
            PolicyConfig(core=core, hidden_size=32, encoder_sizes=[], head_sizes=[16, 16]),
        )
        collector = Collector(envs, policy, 32, 8, seed=3)
        return [collector.collect() for _ in range(2)]

    ours = rollouts()
    monkeypatch.setattr(ActorCritic, "_acting_program", lambda *args: None)
    layers = rollouts()
    for got, want in zip(ours, layers, strict=True):
        for name, leaves in fields(got).items():
            for leaf, reference in zip(leaves, fields(want)[name], strict=True):
                assert torch.equal(leaf, reference), name
        assert got.episode_returns == want.episode_returns


@needs_native
def test_small_products_take_the_native_kernel():
    x = torch.randn(256, 2)
    weight, bias = torch.randn(512, 2), torch.randn(512)
    assert matmul.use_native(x, 256, 2, 512)  # an input projection of few features: any rows
    torch.testing.assert_close(matmul.linear(x, weight, bias), torch.addmm(bias, x, weight.t()))
    assert matmul.use_native(x, 8, 128, 512)  # acting-sized: too small for oneDNN
    assert not matmul.use_native(x, 256, 128, 512)  # oneDNN's
    assert not matmul.use_native(x.double(), 8, 2, 512)
    assert not matmul.use_native(x, 1 << 20, 16, 512)  # over NATIVE_MAX_MACS: one thread only
    rows = matmul.linear(x[:7], weight, bias)
    assert torch.equal(rows, matmul.linear(x, weight, bias)[:7])  # rows independent of M
    assert torch.equal(matmul.linear(x, weight), matmul.linear(x, weight, torch.zeros(512)))
