"""Reference returns for recurrl/Bandit-v0: classic bandit policies, simulated with numpy.

The env (defaults): 5 Bernoulli arms with success probabilities drawn i.i.d. uniform in [0, 1]
every episode, 100 pulls, reward ``success / horizon``, so an episode's return is its success
rate. This prints the expected return of

- the oracle arm (knows the probabilities; exact: ``arms / (arms + 1)``),
- the finite-horizon Gittins index (FHGI) policy: each arm's index is the calibration value of
  the optimal-stopping problem over the *remaining* pulls under its Beta posterior; near
  Bayes-optimal (the check below compares it with the exact Bayes-optimal policy for 2 arms,
  where dynamic programming over all posteriors is affordable),
- Thompson sampling, UCB1, greedy (posterior mean), win-stay lose-shift (the best
  memoryless rule when the previous action and reward are observed) and uniform random,

each as mean ± standard error over ``--episodes`` simulated episodes (same arm draws for all
policies). Usage: ``python scripts/bandit_baselines.py [--arms 5] [--horizon 100]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def fhgi_table(horizon: int, grid: int = 1001) -> np.ndarray:
    """Finite-horizon Gittins index ``[s, f, m]`` of a Beta(1 + s, 1 + f) arm with ``m`` pulls left.

    For a retirement reward ``lam`` per remaining pull, ``W_k(s, f) = max(lam * k, C_k(s, f))``
    with ``C_k = p (1 + W_{k-1}(s + 1, f)) + (1 - p) W_{k-1}(s, f + 1)`` the value of pulling
    now (``p`` the posterior mean). The index is the ``lam`` where ``C_m(s, f) = lam * m``;
    ``C - lam * m`` is convex and decreasing in ``lam``, solved on a grid of ``lam`` and
    interpolated linearly. Entries with ``s + f + m > horizon`` are unused (nan).
    """
    lam = np.linspace(0.0, 1.0, grid)  # (L,)
    n = horizon
    s = np.arange(n + 1)
    p = (1.0 + s[:, None]) / (2.0 + s[:, None] + s[None, :])  # (n+1, n+1) posterior mean
    index = np.full((n + 1, n + 1, n + 1), np.nan)
    w_prev = np.zeros((n + 1, n + 1, grid))  # W_0 = 0 everywhere
    for m in range(1, n + 1):
        # Continue value C_m(s, f) for s + f <= n - m (W_{m-1} is needed up to s + f <= n - m + 1).
        size = n - m + 1
        pm = p[:size, :size, None]
        cont = pm * (1.0 + w_prev[1 : size + 1, :size]) + (1.0 - pm) * w_prev[:size, 1 : size + 1]
        diff = cont - lam * m  # (size, size, L), decreasing in lam
        w_prev = np.maximum(lam * m, cont)
        # Root of diff: last grid point with diff >= 0, then linear interpolation to the next.
        nonneg = diff >= 0
        last = np.clip(nonneg.sum(axis=-1) - 1, 0, grid - 2)
        d0 = np.take_along_axis(diff, last[..., None], axis=-1)[..., 0]
        d1 = np.take_along_axis(diff, last[..., None] + 1, axis=-1)[..., 0]
        frac = np.where(d0 - d1 > 0, d0 / np.maximum(d0 - d1, 1e-300), 0.0)
        idx = lam[last] + np.clip(frac, 0.0, 1.0) * (lam[1] - lam[0])
        tri = s[:size, None] + s[None, :size] <= n - m
        index[:size, :size, m] = np.where(tri, idx, np.nan)
    return index


def simulate(policy: str, probs: np.ndarray, horizon: int, rng: np.random.Generator, table=None):
    """Per-episode returns of ``policy`` on arm probabilities ``probs [E, A]``."""
    episodes, arms = probs.shape
    rows = np.arange(episodes)
    succ = np.zeros((episodes, arms), dtype=np.int64)
    fail = np.zeros((episodes, arms), dtype=np.int64)
    total = np.zeros(episodes)
    prev_arm = rng.integers(arms, size=episodes)
    prev_win = np.ones(episodes, dtype=bool)
    draws = rng.random((horizon, episodes))  # outcome of each pull: success if draw < p
    for t in range(horizon):
        pulls = succ + fail
        tiebreak = rng.random((episodes, arms)) * 1e-9
        if policy == "random":
            arm = rng.integers(arms, size=episodes)
        elif policy == "thompson":
            arm = np.argmax(rng.beta(1 + succ, 1 + fail), axis=1)
        elif policy == "greedy":  # posterior mean (Beta(1, 1) prior), ties at random
            arm = np.argmax((1 + succ) / (2 + pulls) + tiebreak, axis=1)
        elif policy == "ucb1":  # pull every arm once, then mean + sqrt(2 ln t / n)
            mean = succ / np.maximum(pulls, 1)
            bonus = np.sqrt(2.0 * np.log(max(t, 1)) / np.maximum(pulls, 1))
            score = np.where(pulls == 0, np.inf, mean + bonus + tiebreak)
            arm = np.argmax(score, axis=1)
        elif policy == "wsls":  # win-stay, lose-shift to another arm uniformly
            shift = (prev_arm + rng.integers(1, arms, size=episodes)) % arms
            arm = np.where(prev_win, prev_arm, shift) if t > 0 else prev_arm
        elif policy == "fhgi":
            score = table[succ, fail, horizon - t] + tiebreak
            arm = np.argmax(score, axis=1)
        else:
            raise ValueError(policy)
        win = draws[t] < probs[rows, arm]
        succ[rows, arm] += win
        fail[rows, arm] += ~win
        total += win
        prev_arm, prev_win = arm, win
    return total / horizon


def bayes_optimal_two_arms(horizon: int) -> float:
    """Exact Bayes-optimal expected return (success rate) of a 2-arm, uniform-prior bandit.

    Dynamic programming over ``(s1, f1, s2, f2)`` with ``s1 + f1 + s2 + f2 = t`` for every t.
    """
    n = horizon
    # V_t over states with t pulls made: indexed by (s1, f1, s2), f2 = t - s1 - f1 - s2.
    value = np.zeros((n + 2, n + 2, n + 2))  # V_n = 0 (no pulls left); padded by one
    idx = np.arange(n + 1)
    for t in range(n - 1, -1, -1):
        s1 = idx[:, None, None]
        f1 = idx[None, :, None]
        s2 = idx[None, None, :]
        f2 = t - s1 - f1 - s2
        valid = f2 >= 0
        f2c = np.maximum(f2, 0)
        p1 = (1.0 + s1) / (2.0 + s1 + f1)
        p2 = (1.0 + s2) / (2.0 + s2 + f2c)
        nxt = value  # V_{t+1}(s1, f1, s2)
        # Pull arm 1: success -> (s1+1, f1, s2); failure -> (s1, f1+1, s2).
        q1 = p1 * (1 + nxt[1:, :-1, :-1]) + (1 - p1) * nxt[:-1, 1:, :-1]
        # Pull arm 2: success -> (s1, f1, s2+1); failure -> (s1, f1, s2) with f2+1.
        q2 = p2 * (1 + nxt[:-1, :-1, 1:]) + (1 - p2) * nxt[:-1, :-1, :-1]
        new = np.zeros_like(value)
        new[:-1, :-1, :-1] = np.where(valid, np.maximum(q1, q2), 0.0)
        value = new
    return float(value[0, 0, 0]) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="skip the 2-arm exact check")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    table = fhgi_table(args.horizon)
    print(f"{args.arms} arms, {args.horizon} pulls, {args.episodes} episodes per policy")
    print(f"(FHGI table: {time.perf_counter() - start:.1f} s)")
    oracle = args.arms / (args.arms + 1)
    probs = rng.random((args.episodes, args.arms))
    print(f"{'policy':<34} {'return':>16} {'of oracle':>9}")
    print(f"{'oracle arm (exact)':<34} {oracle:>16.4f} {1:>9.1%}")
    print(f"{'oracle arm (these draws)':<34} {probs.max(axis=1).mean():>16.4f}")
    names = {
        "fhgi": "finite-horizon Gittins index",
        "thompson": "Thompson sampling",
        "ucb1": "UCB1",
        "greedy": "greedy (posterior mean)",
        "wsls": "win-stay lose-shift (memoryless)",
        "random": "uniform random",
    }
    for policy, name in names.items():
        returns = simulate(policy, probs, args.horizon, np.random.default_rng(args.seed + 1), table)
        mean, err = returns.mean(), returns.std() / np.sqrt(len(returns))
        print(f"{name:<34} {mean:>8.4f} ± {err:.4f} {mean / oracle:>9.1%}")
    if not args.no_check:
        horizon = args.horizon
        exact = bayes_optimal_two_arms(horizon)
        probs2 = rng.random((args.episodes, 2))
        gittins2 = simulate("fhgi", probs2, horizon, np.random.default_rng(args.seed + 2), table)
        thompson2 = simulate("thompson", probs2, horizon, np.random.default_rng(args.seed + 2))
        print(
            f"check, 2 arms x {horizon} pulls: Bayes-optimal (exact DP) {exact:.4f}, "
            f"FHGI {gittins2.mean():.4f} ± {gittins2.std() / np.sqrt(len(gittins2)):.4f}, "
            f"Thompson {thompson2.mean():.4f}, oracle {2 / 3:.4f}"
        )
    print(f"({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
