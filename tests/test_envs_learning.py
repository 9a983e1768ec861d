"""Learning tests on the memory suite: a recurrent core solves easy settings, no core cannot.

Each run trains on one thread with the suite's experiment settings (32 envs x 64 steps, 4 epochs
of 4 minibatches, lr 1e-3, entropy 0.01, hidden 64) at an easy difficulty, then evaluates the
final policy greedily on 100 fresh episodes. The memoryless runs use the same settings and
budget with ``policy.core=none``. A recurrent core must reach the threshold on 2 of 3 seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from recurrl.algo.evaluate import evaluate
from recurrl.config import load_config
from recurrl.run.train import train
from tests.conftest import passes_on_seeds

pytestmark = pytest.mark.slow

COMMON = [
    "device=cpu",
    "env.num_envs=32",
    "policy.hidden_size=64",
    "policy.encoder_sizes=[64]",
    "ppo.rollout_len=64",
    "ppo.bptt_len=32",
    "ppo.num_minibatches=4",
    "ppo.update_epochs=4",
    "ppo.learning_rate=0.001",
    "ppo.ent_coef=0.01",
    "run.torch_threads=1",
    "run.checkpoint_every=10000000",
]

TASKS = {
    # name -> (overrides, steps, recurrent result at least, memoryless result below, cores).
    # Measured on 2 shared CPU cores (greedy return over 100 episodes, wall time):
    # tmaze lstm 1.00 (14 s), none -0.02 (5 s); the GRU needs more steps on the T-maze (it
    # scores -0.02 at this budget) and is tested on the other two tasks.
    "tmaze": (
        ["env.id=recurrl/TMaze-v0", "env.kwargs={length: 5}"],
        80_000,
        0.9,  # optimal 1
        0.5,  # best memoryless 0
        ["lstm"],
    ),
    "repeat_previous": (
        [
            "env.id=recurrl/RepeatPrevious-v0",
            "env.kwargs={num_symbols: 2, lag: 1, length: 16}",
            "ppo.gamma=0.9",
        ],
        80_000,
        0.9,  # optimal 1; lstm 1.00 (15 s), gru 1.00 (14 s)
        0.4,  # memoryless 2 / num_symbols - 1 = 0; none 0.00 (7 s)
        ["lstm", "gru"],
    ),
    "point_recall": (
        ["env.id=recurrl/PointRecall-v0"],
        160_000,
        0.7,  # optimal 1; lstm 0.79 (31 s), gru 0.88 (26 s)
        0.3,  # best memoryless 0; none 0.00 (12 s)
        ["lstm", "gru"],
    ),
}


def train_and_evaluate(task: str, core: str, run_dir, seed: int = 1) -> float:
    overrides, steps, _, _, _ = TASKS[task]
    config = load_config(
        None,
        COMMON
        + overrides
        + [
            f"seed={seed}",
            f"policy.core={core}",
            f"ppo.total_steps={steps}",
            f"run.dir={run_dir}",
        ],
    )
    result = train(config, quiet=True)
    returns = evaluate(result.policy, config.env, episodes=100, deterministic=True, seed=999)
    return float(np.mean(returns))


@pytest.mark.parametrize(
    ("task", "core"), [(task, core) for task in sorted(TASKS) for core in TASKS[task][4]]
)
def test_recurrent_policy_solves_easy_memory_task(task, core, tmp_path):
    threshold = TASKS[task][2]
    scores = passes_on_seeds(
        lambda seed: train_and_evaluate(task, core, tmp_path / f"seed{seed}", seed), threshold
    )
    assert sum(score >= threshold for score in scores) >= 2, scores


@pytest.mark.parametrize("task", sorted(TASKS))
def test_memoryless_policy_fails_the_same_budget(task, tmp_path):
    # The bound is structural (a memoryless policy cannot beat it in expectation), so one seed.
    assert train_and_evaluate(task, "none", tmp_path) < TASKS[task][3]
