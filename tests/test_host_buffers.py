"""The collector's host staging (``recurrl.algo.host_buffers``): the copy path that accelerators
take gives the same rollout as the shared-memory path CPU takes, rollouts hold ordinary tensors, and
the quick finiteness check agrees with the one that locates bad rows."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import recurrl.algo.rollout
from recurrl.algo.env_checks import all_finite, nonfinite_rows
from recurrl.algo.host_buffers import HostBuffers
from recurrl.algo.rollout import Collector, Rollout
from recurrl.config import PolicyConfig
from recurrl.policy import ActorCritic
from recurrl.policy.tree import TensorTree, tree_leaves
from tests.space_envs import RandomSpaceEnv

SAME, NEXT = gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP
DICT = spaces.Dict(
    {
        "x": spaces.Box(-1.0, 1.0, (2,), np.float32),
        "n": spaces.Discrete(4),
        "b": spaces.MultiBinary(3),
    }
)
ENV_FIELDS = ("obs", "rewards", "terminated", "truncated", "episode_start", "valid", "prev_rewards")


def make_collector(mode, device="cpu", seed=0) -> Collector:
    torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv(
        [lambda: RandomSpaceEnv(DICT, spaces.Discrete(3, start=1), 3, truncate=True)] * 3,
        autoreset_mode=mode,
    )
    config = PolicyConfig(hidden_size=8, encoder_sizes=[8], prev_action=True, prev_reward=True)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space, config)
    return Collector(envs, policy.to(device), 8, 4, seed=seed)


def fields(rollout: Rollout) -> dict[str, list[torch.Tensor]]:
    """Every tensor of a rollout, by field (a TensorTree's leaves, the chunk states)."""
    values = {name: getattr(rollout, name) for name in rollout.__dataclass_fields__}
    tensors = torch.Tensor | TensorTree | tuple
    return {
        name: tree_leaves(value) for name, value in values.items() if isinstance(value, tensors)
    }


@pytest.mark.parametrize("mode", [SAME, NEXT])
def test_copied_host_buffers_give_the_same_rollouts_as_shared_ones(mode, monkeypatch):
    shared = make_collector(mode)
    expected = [shared.collect() for _ in range(2)]
    monkeypatch.setattr(recurrl.algo.rollout, "HostBuffers", partial(HostBuffers, shared=False))
    copied = make_collector(mode)
    for want, got in zip(expected, (copied.collect() for _ in range(2)), strict=True):
        for name, leaves in fields(got).items():
            for leaf, reference in zip(leaves, fields(want)[name], strict=True):
                assert leaf.dtype == reference.dtype and torch.equal(leaf, reference), name
                assert not leaf.is_inference(), name  # usable by the update's autograd
        assert got.episode_returns == want.episode_returns


def test_previous_reward_statistics_get_the_raw_rewards_of_valid_steps():
    collector = make_collector(NEXT)
    rollout = collector.collect()
    unseen = torch.as_tensor(np.concatenate(collector.unseen_rewards))
    assert unseen.dtype == torch.float64
    assert torch.equal(unseen.float(), rollout.rewards[rollout.valid.bool()])  # no scaler here
    assert (rollout.valid == 0).any()  # NEXT_STEP reset-only steps are left out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", [SAME, NEXT])
def test_cuda_rollout_has_the_cpu_env_data_on_the_device(mode):
    cpu, cuda = make_collector(mode), make_collector(mode, "cuda")
    for _ in range(2):  # the envs' data does not depend on the actions
        on_cpu, on_cuda = cpu.collect(), cuda.collect()
        torch.cuda.synchronize()
        for name in ENV_FIELDS:
            for leaf, reference in zip(fields(on_cuda)[name], fields(on_cpu)[name], strict=True):
                assert leaf.device.type == "cuda" and not leaf.is_inference(), name
                assert torch.equal(leaf.cpu(), reference), name
        assert all(leaf.device.type == "cuda" for leaf in fields(on_cuda)["actions"])


@pytest.mark.parametrize("nested", ["dict", "tuple"])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_all_finite_agrees_with_nonfinite_rows(nested, bad):
    if nested == "dict":
        obs = {"a": np.zeros((3, 2), np.float32), "b": (np.arange(3), np.ones((3, 1)))}
        leaf = obs["b"][1]
    else:
        obs = (np.zeros((3, 2), np.float16), {"c": np.zeros(3, np.uint8)})
        leaf = obs[0]
    if bad is not None:
        leaf[1, 0] = bad
    located, _ = nonfinite_rows({"observation": obs}, 3)
    assert all_finite(obs) == (not located.any()) == (bad is None)
