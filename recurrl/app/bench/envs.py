"""Environment throughput: the native ``VectorEnv`` of every env that registers one (the
memory suite and CartPoleNoVelocity) against ``SyncVectorEnv``.

For every env, steps/s through the real ``VectorEnv.step`` API at several ``num_envs`` (random
valid actions generated beforehand, autoreset included; best of 5 timing windows), and the same
task as Gymnasium's ``SyncVectorEnv`` of single envs (SAME_STEP autoreset) for comparison. The
process is pinned to one core where the OS allows, so the numbers are per core.

Usage::

    python -m recurrl.app.bench.envs --out env_bench.json
    python -m recurrl.app.bench.envs --envs TMaze,CueRecall --sizes 1,4096 --seconds 0.5
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import gymnasium as gym
import numpy as np

from recurrl import envs
from recurrl.app.bench import cpu_model
from recurrl.app.cli import ArgumentParser, plain_text, positive_float, positive_int

SUITE = [
    env_id.split("/")[1][:-3] for env_id in envs.ENVIRONMENTS if gym.spec(env_id).vector_entry_point
]
NUM_ACTION_BATCHES = 64  # pre-generated action batches, cycled


def machine() -> dict[str, Any]:
    """CPU model, usable cores and library versions."""
    model = cpu_model()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
    }


def pin_to_one_core() -> bool:
    """Run on a single core (Linux); returns whether it worked."""
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        return False
    return True


def steps_per_second(vector_env: gym.vector.VectorEnv, seconds: float, windows: int = 5) -> float:
    """Env steps/s (``num_envs`` per call) of ``vector_env.step``: the best of ``windows``
    timing windows sharing ``seconds`` (the least disturbed by other processes, as timeit does).
    """
    vector_env.reset(seed=0)
    vector_env.action_space.seed(0)
    actions = [vector_env.action_space.sample() for _ in range(NUM_ACTION_BATCHES)]
    for batch in actions[:4]:  # warm up caches and allocator
        vector_env.step(batch)
    best = 0.0
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / windows or calls < 2:
            for batch in actions[:8]:
                vector_env.step(batch)
            calls += 8
            actions = actions[8:] + actions[:8]  # cycle through every pre-generated batch
        best = max(best, vector_env.num_envs * calls / elapsed)
    return best


def bench_env(name: str, sizes: list[int], sync_envs: int, seconds: float) -> dict[str, Any]:
    env_id = f"recurrl/{name}-v0"
    native = {
        n: steps_per_second(gym.make_vec(env_id, num_envs=n), seconds) for n in sizes + [sync_envs]
    }
    sync = gym.make_vec(
        env_id,
        num_envs=sync_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    sync_rate = steps_per_second(sync, seconds)
    return {
        "env": env_id,
        "native": {str(n): native[n] for n in sizes},
        "sync_num_envs": sync_envs,
        "sync": sync_rate,
        "native_at_sync_num_envs": native[sync_envs],
        "speedup_vs_sync": native[sync_envs] / sync_rate,
    }


def print_table(results: list[dict[str, Any]], sizes: list[int], sync_envs: int) -> None:
    header = "".join(f"{f'N={n}':>12}" for n in sizes)
    print(f"{'env':<16}{header}{f'sync N={sync_envs}':>16}{'speedup':>10}   (steps/s)")
    for row in results:
        rates = "".join(f"{row['native'][str(n)]:>12.3g}" for n in sizes)
        print(f"{row['env'][8:-3]:<16}{rates}{row['sync']:>16.3g}{row['speedup_vs_sync']:>9.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="recurrl bench envs", description=plain_text(__doc__))
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--envs", default=",".join(SUITE), help="comma-separated env names")
    parser.add_argument("--sizes", default="1,256,4096", help="num_envs values, comma-separated")
    parser.add_argument(
        "--sync-envs", type=positive_int, default=1024, help="num_envs for the comparison"
    )
    parser.add_argument(
        "--seconds", type=positive_float, default=1.0, help="timing per measurement"
    )
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = parser.parse_args(argv)
    names = [name for name in args.envs.split(",") if name]
    unknown = sorted(set(names) - set(SUITE))
    if unknown:
        parser.error(f"unknown envs {unknown}; choose from {SUITE}")
    sizes = [int(n) for n in args.sizes.split(",")]
    info = {**machine(), "pinned_to_one_core": False if args.all_cores else pin_to_one_core()}
    print(", ".join(f"{key}: {value}" for key, value in info.items()))
    results = [bench_env(name, sizes, args.sync_envs, args.seconds) for name in names]
    print_table(results, sizes, args.sync_envs)
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"machine": info, "seconds": args.seconds, "results": results}, out, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
