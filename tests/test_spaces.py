"""Every observation space x every action space: build, collect, update, save, load, act.

Each pair runs on :class:`tests.space_envs.RandomSpaceEnv` (observations sampled from the space
itself) through the real pipeline: ``make_vector_env`` -> ``ActorCritic`` -> ``Collector`` ->
first-epoch log-probs equal to the stored ones -> one PPO update -> ``save_checkpoint`` ->
``recurrl.load_policy`` -> ``act`` (single and batched) giving the same actions as the original.
The previous action and reward are core inputs throughout, so every action space is also encoded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

import recurrl
from recurrl.algo import ppo
from recurrl.algo.make_env import make_vector_env
from recurrl.algo.rollout import Collector
from recurrl.config import Config, EnvConfig, PolicyConfig, PPOConfig, to_dict
from recurrl.policy import ActorCritic
from recurrl.policy.spaces import space_to_dict
from recurrl.run.checkpoints import save_checkpoint
from tests import space_envs  # noqa: F401  (registers recurrl_test/* ids)

OBSERVATION_SPACES = {
    "box": spaces.Box(-1.0, 1.0, (3,), np.float32),
    "box_matrix": spaces.Box(-2.0, 2.0, (2, 3), np.float32),
    "box_int": spaces.Box(0, 5, (2,), np.int64),
    "image_hwc": spaces.Box(0, 255, (10, 10, 3), np.uint8),
    "image_chw": spaces.Box(0, 255, (2, 9, 9), np.uint8),
    "discrete": spaces.Discrete(4, start=2),
    "multi_discrete": spaces.MultiDiscrete([3, 2]),
    "multi_binary": spaces.MultiBinary(4),
    "tuple": spaces.Tuple((spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.Discrete(3))),
    "dict_nested": spaces.Dict(
        {
            "image": spaces.Box(0, 255, (8, 8, 1), np.uint8),
            "position": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "inner": spaces.Dict(
                {
                    "keys": spaces.MultiBinary(2),
                    "pair": spaces.Tuple((spaces.MultiDiscrete([2, 2]), spaces.Discrete(2))),
                }
            ),
        }
    ),
}

ACTION_SPACES = {
    "discrete": (spaces.Discrete(3, start=1), False),
    "multi_discrete": (spaces.MultiDiscrete([2, 3]), False),
    "multi_binary": (spaces.MultiBinary(3), False),
    "box": (spaces.Box(-1.0, 2.0, (2,), np.float32), False),
    "box_squashed": (spaces.Box(-1.0, 2.0, (2,), np.float32), True),
}

TINY_POLICY = {"hidden_size": 8, "encoder_sizes": [8]}
TINY_PPO = PPOConfig(rollout_len=8, bptt_len=4, num_minibatches=2, update_epochs=1)


def env_config(obs_space, action_space, **kwargs) -> EnvConfig:
    """A ``RandomSpaceEnv`` config whose kwargs are plain data (so checkpoints can hold it)."""
    return EnvConfig(
        id="recurrl_test/RandomSpace-v0",
        kwargs={
            "observation_space": space_to_dict(obs_space),
            "action_space": space_to_dict(action_space),
            **kwargs,
        },
        num_envs=2,
        normalize_obs=True,
    )


def collect(policy: ActorCritic, config: EnvConfig, seed: int = 0):
    envs = make_vector_env(config)
    collector = Collector(envs, policy, TINY_PPO.rollout_len, TINY_PPO.bptt_len, seed=seed)
    rollout = collector.collect()
    advantages, returns = rollout.advantages(0.99, 0.95)
    envs.close()
    return rollout, advantages, returns


def first_epoch_log_probs(policy: ActorCritic, sequences: ppo.Sequences) -> torch.Tensor:
    with torch.no_grad():
        return policy.evaluate_actions(
            sequences.obs,
            sequences.actions,
            sequences.start_states,
            sequences.episode_start,
            sequences.prev_actions,
            sequences.prev_rewards,
        ).log_prob


def assert_same_actions(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("action_name", ACTION_SPACES)
@pytest.mark.parametrize("obs_name", OBSERVATION_SPACES)
def test_space_pair_collect_update_save_load_act(obs_name, action_name, tmp_path):
    torch.manual_seed(0)
    obs_space = OBSERVATION_SPACES[obs_name]
    action_space, squash = ACTION_SPACES[action_name]
    environment = env_config(obs_space, action_space, truncate=True)
    previous = {"prev_action": True, "prev_reward": True}  # every action space as a core input
    policy_config = PolicyConfig(**TINY_POLICY, squash_actions=squash, **previous)
    config = Config(env=environment, policy=policy_config)
    policy = ActorCritic(obs_space, action_space, config.policy, normalize_obs=True)

    rollout, advantages, returns = collect(policy, environment)
    sequences = ppo.make_sequences(rollout, advantages, returns, TINY_PPO.bptt_len)
    recomputed = first_epoch_log_probs(policy, sequences)
    torch.testing.assert_close(recomputed, sequences.log_probs, rtol=0, atol=2e-5)

    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    stats = ppo.update(
        policy, optimizer, rollout, advantages, returns, TINY_PPO, torch.Generator().manual_seed(0)
    )
    assert all(np.isfinite(stats[name]) for name in ("policy_loss", "value_loss", "entropy"))
    if policy.obs_normalizer is not None:  # as the trainer does after each update
        policy.obs_normalizer.update(rollout.obs[rollout.valid.bool()])

    path = save_checkpoint(tmp_path / "policy.pt", policy, to_dict(config), 16)
    loaded = recurrl.load_policy(path)
    policy.eval()
    envs = make_vector_env(environment)
    batch, _ = envs.reset(seed=1)
    envs.close()
    single = obs_space.sample()
    for obs in (single, batch):
        ours, _ = policy.act(obs, None, True, deterministic=True)
        theirs, _ = loaded.act(obs, None, True, deterministic=True)
        assert_same_actions(ours, theirs)
    sampled, state = loaded.act(single, None, True)
    assert action_space.contains(sampled), (sampled, action_space)
    ours, _ = policy.act(single, state, False, True, prev_action=sampled, prev_reward=1.5)
    theirs, _ = loaded.act(single, state, False, True, prev_action=sampled, prev_reward=1.5)
    assert_same_actions(ours, theirs)
    batch_actions, _ = loaded.act(batch, None, True)
    assert all(action_space.contains(a) for a in batch_actions)
    assert all(s.shape[1] == 1 for s in state)
