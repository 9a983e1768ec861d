"""Small learning tests: memory solves CartPole without velocities; a memoryless policy cannot.

A recurrent run must score on 2 of 3 seeds (seeds stop early once the outcome is decided), with a
threshold far above what a memoryless policy reaches (sb3-contrib reports ~50; the test below
holds ours under 200) and 25 under the target every seed meets at 100k-200k steps (>= 475 of the
optimum 500, docs/performance.md), so a seed that lands at 470 after a change of float rounding
does not decide the test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from recurrl.algo.evaluate import evaluate
from recurrl.config import load_config
from recurrl.run.train import train
from tests.conftest import passes_on_seeds

pytestmark = pytest.mark.slow


def train_and_evaluate(experiment: str, run_dir, steps: int, seed: int = 1) -> float:
    config = load_config(
        f"experiments/{experiment}.yaml",
        [f"run.dir={run_dir}", f"ppo.total_steps={steps}", f"seed={seed}"],
    )
    result = train(config, quiet=True)
    returns = evaluate(result.policy, config.env, episodes=20, deterministic=True, seed=999)
    return float(np.mean(returns))


def test_recurrent_policy_solves_cartpole_without_velocity(tmp_path):
    scores = passes_on_seeds(
        lambda seed: train_and_evaluate(
            "cartpole_novelocity_lstm", tmp_path / f"seed{seed}", 100_000, seed
        ),
        threshold=450,
    )
    assert sum(score >= 450 for score in scores) >= 2, scores


def test_memoryless_policy_fails_cartpole_without_velocity(tmp_path):
    # Same encoder, heads, settings and budget as the recurrent runs; only the core differs.
    assert train_and_evaluate("cartpole_novelocity_mlp", tmp_path, steps=80_000) < 200


TMAZE_SCRIPT = """
import sys
import numpy as np
from recurrl.algo.evaluate import evaluate
from recurrl.config import load_config
from recurrl.nn import native
from recurrl.run.train import train

assert not native.available(), "RECURRL_NATIVE=0 should turn the C kernels off"
config = load_config("experiments/tmaze_lstm.yaml", sys.argv[1:])
result = train(config, quiet=True)
print(float(np.mean(evaluate(result.policy, config.env, episodes=50, deterministic=True,
                             seed=999))))
"""


def test_memory_task_is_solved_without_the_native_kernels(tmp_path):
    """The pure-PyTorch cells learn too (``RECURRL_NATIVE=0``): the T-maze at length 5."""

    def run(seed: int) -> float:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                TMAZE_SCRIPT,
                f"seed={seed}",
                f"run.dir={tmp_path / f'seed{seed}'}",
                "env.kwargs={length: 5}",
                "ppo.total_steps=80000",
                "run.torch_threads=1",
            ],
            env={**os.environ, "RECURRL_NATIVE": "0"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        return float(result.stdout.strip().splitlines()[-1])

    scores = passes_on_seeds(run, threshold=0.9)
    assert sum(score >= 0.9 for score in scores) >= 2, scores  # memoryless: 0
