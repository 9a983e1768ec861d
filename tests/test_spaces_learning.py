"""Small learning tests beyond Box/Discrete: a Dict observation, MultiDiscrete actions, and a
meta-RL bandit that only the previous action and reward make solvable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recurrl.algo.evaluate import evaluate
from recurrl.config import load_config
from recurrl.envs.bandit import oracle_return
from recurrl.run.train import train
from tests.conftest import passes_on_seeds

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    """Budgets are sized for one core; restore torch's thread count afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train_and_evaluate(run_dir, overrides: list[str], episodes: int = 50, **kwargs) -> float:
    config = load_config(
        None,
        [
            f"run.dir={run_dir}",
            "run.torch_threads=1",
            "run.checkpoint_every=10000000",
            "device=cpu",
            *overrides,
        ],
    )
    result = train(config, quiet=True)
    returns = evaluate(result.policy, config.env, episodes=episodes, seed=999, **kwargs)
    return float(np.mean(returns))


def assert_learned_on_seeds(tmp_path, env: list[str], threshold: float) -> None:
    """Greedy return >= ``threshold`` on 2 of 3 seeds with the ``SMALL`` settings."""
    scores = passes_on_seeds(
        lambda seed: train_and_evaluate(
            tmp_path / f"seed{seed}", env + SMALL + [f"seed={seed}"], deterministic=True
        ),
        threshold,
    )
    assert sum(score >= threshold for score in scores) >= 2, scores


SMALL = [
    "env.num_envs=8",
    "policy.hidden_size=32",
    "policy.encoder_sizes=[32]",
    "ppo.total_steps=8192",
    "ppo.rollout_len=32",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.learning_rate=0.003",
]


def test_dict_observation_task_is_learned(tmp_path):
    # Reward 1 per step for naming the Discrete cue inside Dict(cue, noise Box, uint8 image);
    # 8 steps: a random policy scores 8 / 4 = 2, reading the cue 8.
    env = ["env.id=tests.space_envs:recurrl_test/DictCue-v0", "env.normalize_obs=true"]
    assert_learned_on_seeds(tmp_path, env, threshold=7.0)


def test_multi_discrete_action_task_is_learned(tmp_path):
    # 0.5 per matching part of MultiDiscrete([3, 3]); 8 steps: random 8 / 3 = 2.67, optimum 8.
    env = ["env.id=tests.space_envs:recurrl_test/MultiTarget-v0"]
    assert_learned_on_seeds(tmp_path, env, threshold=7.0)


def test_bandit_is_solved_only_with_previous_action_and_reward(tmp_path):
    # recurrl/Bandit-v0 with its observation blanked (it shows the last arm and reward): the
    # previous action and reward reach the policy only through policy.prev_action/prev_reward.
    # 3 arms, 20 pulls: random 0.5; oracle arm 0.75; Thompson sampling ~0.63 and greedy on the
    # posterior mean ~0.67 (simulated); without the inputs nothing beats 0.5.
    settings = [
        "env.id=recurrl/Bandit-v0",
        "env.kwargs={num_arms: 3, horizon: 20}",
        "env.num_envs=16",
        "env.wrappers=[{path: 'tests.space_envs:BlankObservation'}]",
        "policy.core=gru",
        "policy.encoder_sizes=[]",
        "ppo.total_steps=80000",
        "ppo.rollout_len=40",
        "ppo.bptt_len=20",
        "ppo.num_minibatches=2",
        "ppo.update_epochs=8",
        "ppo.learning_rate=0.003",
        "ppo.gamma=0.95",
        "ppo.gae_lambda=0.8",
        "ppo.ent_coef=0.01",
    ]
    oracle = oracle_return(3)
    inputs = ["policy.prev_action=true", "policy.prev_reward=true"]
    scores = passes_on_seeds(
        lambda seed: train_and_evaluate(
            tmp_path / f"seed{seed}", settings + inputs + [f"seed={seed}"], episodes=400
        ),
        threshold=0.8 * oracle,  # 0.6: near greedy-posterior play
    )
    assert sum(score >= 0.8 * oracle for score in scores) >= 2, scores
    blind = ["policy.prev_action=false", "policy.prev_reward=false"]
    assert train_and_evaluate(tmp_path / "blind", settings + blind, episodes=400) <= 0.56
