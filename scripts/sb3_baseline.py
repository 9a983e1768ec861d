"""sb3-contrib's RecurrentPPO with its defaults on a Gymnasium id: the reference that
docs/defaults.md compares recurrl's defaults with.

Trains ``RecurrentPPO("MlpLstmPolicy", env)`` (its defaults: LSTM 256, 128 steps per env, 10
epochs, lr 3e-4) on ``--num-envs`` copies for ``--steps``, then prints the greedy return over
``--episodes`` episodes, as ``scripts/seed_sweep.py`` does for recurrl.

    pip install -e '.[bench,popgym]'
    python scripts/sb3_baseline.py popgym:popgym-RepeatPreviousEasy-v0 --seeds 1,2
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import gymnasium as gym
import numpy as np


def make(env_id: str) -> str:
    """Import ``module`` of ``module:Id`` (its registration), return ``Id``."""
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        importlib.import_module(module)
    return env_id


def greedy_return(model, env_id: str, episodes: int, seed: int) -> float:
    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, start, total, done = None, np.ones((1,), dtype=bool), 0.0, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            start = np.zeros((1,), dtype=bool)
            done = terminated or truncated
        returns.append(total)
    return statistics.fmean(returns)


def int_lstm_sizes(torch) -> None:
    """Cast ``nn.LSTM``'s ``input_size`` to ``int``: sb3-contrib 2.9.2 passes the ``numpy.int64``
    that ``sum(nvec)`` gives for a ``MultiDiscrete`` observation (POPGym's CountRecall), which
    torch rejects at construction. The cast changes nothing else about its policy."""
    original = torch.nn.LSTM.__init__

    def init(self, input_size, *args, **kwargs):
        original(self, int(input_size), *args, **kwargs)

    torch.nn.LSTM.__init__ = init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()

    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    int_lstm_sizes(torch)
    env_id = make(args.env_id)
    scores = []
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        envs = make_vec_env(env_id, n_envs=args.num_envs, seed=seed)
        model = RecurrentPPO("MlpLstmPolicy", envs, seed=seed, device="cpu", verbose=0)
        model.learn(args.steps)
        score = greedy_return(model, env_id, args.episodes, 999)
        scores.append(score)
        seconds = time.perf_counter() - started
        print(f"{args.env_id} seed={seed} steps={args.steps}: {score:.4g} ({seconds:.0f} s)")
    spread = statistics.pstdev(scores) if len(scores) > 1 else 0.0
    print(f"{args.env_id}: {statistics.fmean(scores):.4g} ± {spread:.3g}, worst {min(scores):.4g}")


if __name__ == "__main__":
    main()
