"""Greedy return of an experiment over seeds and budgets, for several variants of its settings.

Each (variant, budget, seed) trains ``recurrl train FILE seed=K ppo.total_steps=N <overrides>``
in its own process, then ``recurrl eval RUN --episodes E --deterministic --seed 999``. Prints,
per variant and budget, every seed's score and mean ± std and the worst seed, and writes JSON.

    python scripts/seed_sweep.py experiments/cartpole_novelocity_lstm.yaml \\
        --variant base= --variant anneal_clip=ppo.anneal_clip=true \\
        --seeds 1,2,3,4,5 --budgets 100000,150000,200000 --workers 2 --out sweep.json

A variant is ``NAME=override,override,...`` (``NAME=`` for the file as it is); commas inside
brackets belong to a list value: ``wide=policy.head_sizes=[64,64],policy.hidden_size=256``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path


def split_overrides(text: str) -> list[str]:
    """``a=1,b=[2,3]`` -> ``["a=1", "b=[2,3]"]``: split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part for part in parts if part]


def run_one(
    experiment: str,
    name: str,
    overrides: list[str],
    seed: int,
    budget: int,
    episodes: int,
    root: Path,
) -> dict:
    run = root / f"{name}-{budget}-seed{seed}"
    python = [sys.executable, "-m", "recurrl"]
    started = time.perf_counter()
    train = [
        *python,
        "train",
        experiment,
        f"seed={seed}",
        f"ppo.total_steps={budget}",
        f"run.dir={run}",
        *overrides,
        "--quiet",
        "--eval-episodes=0",
    ]
    done = subprocess.run(train, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    evaluate = [
        *python,
        "eval",
        str(run),
        "--episodes",
        str(episodes),
        "--deterministic",
        "--seed",
        "999",
        "--out",
        str(run / "eval.json"),
    ]
    done = subprocess.run(evaluate, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads((run / "eval.json").read_text())
    return {"score": result["mean"], "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("--variant", action="append", default=[], help="NAME=override,...")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--budgets", default="100000")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", default=None, help="keep the run folders under this folder")
    args = parser.parse_args(argv)
    variants = {}
    for text in args.variant or ["base="]:
        name, _, overrides = text.partition("=")
        variants[name] = split_overrides(overrides)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    jobs = list(itertools.product(variants, budgets, seeds))
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="recurrl-sweep-") as scratch:
        root = args.keep or scratch  # the run folders: kept there, or deleted at the end
        with ThreadPoolExecutor(args.workers) as pool:
            futures = {
                job: pool.submit(
                    run_one,
                    args.experiment,
                    job[0],
                    variants[job[0]],
                    job[2],
                    job[1],
                    args.episodes,
                    Path(root),
                )
                for job in jobs
            }
            results = {}
            jobs_of = {future: job for job, future in futures.items()}
            for future in as_completed(jobs_of):  # each as it ends: a cut-off sweep says some
                job = jobs_of[future]
                results[job] = future.result()
                outcome = results[job].get("score", results[job].get("error"))
                print(f"done: {job[0]} budget={job[1]} seed={job[2]}: {outcome}", flush=True)
    print(
        f"# {args.experiment}: greedy return over {args.episodes} episodes per seed "
        f"(seeds {args.seeds}), {os.cpu_count()} cores, {args.workers} runs at a time"
    )
    print(f"{'variant':<24} {'budget':>8}  {'per seed':<40} {'mean ± std':>16} {'worst':>8}")
    table = []
    for name, budget in itertools.product(variants, budgets):
        rows = [results[(name, budget, seed)] for seed in seeds]
        scores = [r["score"] for r in rows if "score" in r]
        errors = [r["error"] for r in rows if "error" in r]
        per_seed = " ".join(f"{r['score']:.4g}" if "score" in r else "ERR" for r in rows)
        if scores:
            std = statistics.pstdev(scores)
            summary = f"{statistics.mean(scores):.4g} ± {std:.3g}"
            worst = f"{min(scores):.4g}"
        else:
            summary, worst = "-", "-"
        print(f"{name:<24} {budget:>8,}  {per_seed:<40} {summary:>16} {worst:>8}")
        for error in errors[:1]:
            print(f"    error: {error}")
        table.append(
            {
                "variant": name,
                "overrides": variants[name],
                "budget": budget,
                "seeds": seeds,
                "scores": [r.get("score") for r in rows],
            }
        )
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
