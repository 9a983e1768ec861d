"""Training throughput: recurrl against sb3-contrib's RecurrentPPO, and scaling with num_envs.

``recurrl bench train`` (``python -m recurrl.app.bench.train``) prints two tables and writes JSON:

1. recurrl and sb3-contrib's ``RecurrentPPO`` side by side on the same env with matched settings
   (8 envs, rollout 128, LSTM 128, 4 epochs, 4 minibatches): training steps per second over the
   whole loop (acting + updates) and the mean episodic return reached.
2. recurrl's SPS and peak resident memory for ``num_envs`` in {8, 64, 512}.

Every measurement runs in a fresh subprocess so peak memory and thread pools are its own.
sb3-contrib is optional (``pip install -e .[bench]``); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recurrl.app.bench import cpu_model
from recurrl.app.cli import ArgumentParser, non_negative_int, plain_text, positive_int


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and GPU (if any), for the table header."""
    import os

    import torch

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_recurrl(
    env_id: str,
    num_envs: int,
    steps: int,
    device: str,
    bptt_len: int,
    threads: int,
    vectorization: str = "auto",
    seed: int = 1,
    core: str = "lstm",
) -> dict:
    """Train recurrl for ``steps`` and time it (the first update, which warms up, is excluded).

    ``vectorization`` is ``env.vectorization``: ``auto`` takes the env's native batched version
    where it has one, ``sync`` Gymnasium's ``SyncVectorEnv`` of single envs (like sb3-contrib's
    ``DummyVecEnv``), ``torch`` the env's device-resident version (stepping on ``device``).
    ``core`` is ``policy.core`` (LSTM or GRU 128). Besides SPS, the row holds the time split
    (rollout / update seconds per step, from the trainer's ``rollout_s`` / ``update_s``) and, on
    a GPU, its peak memory.
    """
    import numpy as np
    import torch

    from recurrl.config import config_from_dict
    from recurrl.run.progress import describe_cells
    from recurrl.run.train import Trainer

    config = config_from_dict(
        {
            "name": "bench",
            "seed": seed,
            "device": device,
            "env": {
                "id": env_id,
                "num_envs": num_envs,
                "vectorization": vectorization,
                "normalize_reward": False,  # as sb3-contrib's RecurrentPPO (no VecNormalize)
            },
            # sb3-contrib's MlpLstmPolicy: observation -> LSTM 128 -> MLP [64, 64] (tanh), for
            # the actor and the critic each.
            "policy": {
                "core": core,
                "hidden_size": 128,
                "encoder_sizes": [],
                "head_sizes": [64, 64],
            },
            "ppo": {
                "total_steps": steps + num_envs * 128,  # + one warm-up update
                "rollout_len": 128,
                "bptt_len": bptt_len,
                "num_minibatches": 4,
                "update_epochs": 4,
                "learning_rate": 3e-4,  # sb3-contrib's defaults, not recurrl's
                "ent_coef": 0.0,
            },
            "run": {
                "dir": f"/tmp/recurrl-bench-{num_envs}-{time.time_ns()}",
                "torch_threads": threads,
                "checkpoint_every": 1 << 62,  # only the final one: time the training alone
            },
        }
    )
    trainer = Trainer(config, quiet=True)
    history = trainer.run().history
    first, last = history[0], history[-1]  # time from the end of the warm-up update
    seconds = last["time_s"] - first["time_s"]
    returns = [m["episodic_return"] for m in history[-3:] if m["episodic_return"] is not None]
    timed = history[1:]
    rollout_s = sum(m["rollout_s"] for m in timed)
    update_s = sum(m["update_s"] for m in timed)
    gpu_mb = None
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    library = "recurrl" if vectorization == "auto" else f"recurrl/{vectorization}"
    return {
        "library": library if core == "lstm" else f"{library}/{core}",
        "rollout_share": rollout_s / max(rollout_s + update_s, 1e-9),
        "peak_gpu_mb": gpu_mb,
        "cells": describe_cells(trainer.policy, trainer.device, num_envs),
        "capture": getattr(trainer.collector, "capture_note", None),
        "seed": seed,
        "num_envs": num_envs,
        "steps": trainer.global_step,
        "sps": (last["global_step"] - first["global_step"]) / seconds,
        "final_return": float(np.mean(returns)) if returns else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_sb3(
    env_id: str, num_envs: int, steps: int, device: str, threads: int, seed: int = 1
) -> dict:
    """sb3-contrib RecurrentPPO with settings matched to :func:`run_recurrl`."""
    import gymnasium as gym
    import numpy as np
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env

    import recurrl.envs  # noqa: F401  (registers the recurrl/* ids)

    if threads:
        torch.set_num_threads(threads)
    envs = make_vec_env(lambda: gym.make(env_id), n_envs=num_envs, seed=seed)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        envs,
        n_steps=128,
        batch_size=num_envs * 128 // 4,
        n_epochs=4,
        policy_kwargs={"lstm_hidden_size": 128},
        device=device,
        seed=seed,
        verbose=0,
    )
    model.learn(total_timesteps=num_envs * 128)  # warm-up update, not timed
    started = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - started
    returns = [info["r"] for info in model.ep_info_buffer]
    return {
        "library": "sb3-contrib",
        "seed": seed,
        "num_envs": num_envs,
        "steps": steps,
        "sps": steps / seconds,
        "final_return": float(np.mean(returns[-20:])) if returns else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _in_subprocess(kind: str, **kwargs: Any) -> dict | None:
    command = [
        sys.executable,
        "-m",
        "recurrl.app.bench.train",
        "--single",
        kind,
        json.dumps(kwargs),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {kind} {kwargs}: failed\n{proc.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sb3_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sb3_contrib") is not None


def _format(row: dict) -> str:
    ret = row["final_return"]
    text = (
        f"{row['library']:<14} {row['num_envs']:>8} {row['steps']:>9,} {row['sps']:>10,.0f} "
        f"{(f'{ret:.1f}' if ret is not None else '-'):>12} {row['peak_rss_mb']:>12,.0f}"
    )
    if "rollout_share" in row:  # recurrl's rows: the time split, GPU memory, cells, capture
        gpu = row.get("peak_gpu_mb")
        text += f" {row['rollout_share']:>8.0%} {(f'{gpu:,.0f}' if gpu else '-'):>8}"
        text += f"  {row.get('cells') or ''} {row.get('capture') or ''}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="recurrl bench train", description=plain_text(__doc__))
    parser.add_argument("--env", default="recurrl/CartPoleNoVelocity-v0")
    parser.add_argument("--steps", type=positive_int, default=32_768, help="timed steps per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bptt-len", type=positive_int, default=16)
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads for both libraries"
    )
    parser.add_argument("--scaling", default="8,64,512", help="num_envs values for table 2")
    parser.add_argument("--scaling-env", default=None, help="env for table 2 (default --env)")
    parser.add_argument(
        "--scaling-vectorization",
        default="auto",
        help="env.vectorization for table 2 (torch: the env steps on --device)",
    )
    parser.add_argument("--cores", default="lstm", help="policy cores for table 2: lstm,gru")
    parser.add_argument("--only-scaling", action="store_true", help="skip table 1")
    parser.add_argument("--no-sb3", action="store_true", help="skip sb3-contrib")
    parser.add_argument(
        "--learning-steps",
        type=non_negative_int,
        default=0,
        help="table 3: both libraries trained this long on --env per seed (0: skip)",
    )
    parser.add_argument("--learning-seeds", default="1,2", help="seeds for table 3")
    parser.add_argument("--out", default="bench_train.json")
    parser.add_argument("--single", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        kind, kwargs = args.single[0], json.loads(args.single[1])
        row = run_recurrl(**kwargs) if kind == "recurrl" else run_sb3(**kwargs)
        print(json.dumps(row))
        return 0

    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({args.threads} threads), GPU: {info['gpu'] or 'none'}, device {args.device}"
    )
    header = f"{'library':<14} {'num_envs':>8} {'steps':>9} {'SPS':>10} {'final return':>12} "
    header += f"{'peak MB':>12} {'rollout':>8} {'GPU MB':>8}  cells"
    print(
        f"\n1. {args.env}: 8 envs x 128 steps, LSTM 128 + MLP [64, 64] for actor and critic "
        f"(sb3-contrib MlpLstmPolicy), 4 epochs, 4 minibatches\n{header}"
    )
    comparison = []
    common = {
        "env_id": args.env,
        "num_envs": 8,
        "steps": args.steps,
        "device": args.device,
        "threads": args.threads,
    }
    for vectorization in (
        () if args.only_scaling else ("auto", "sync")
    ):  # the env's own batched version, and SyncVectorEnv
        row = _in_subprocess(
            "recurrl", **common, bptt_len=args.bptt_len, vectorization=vectorization
        )
        if row:
            comparison.append(row)
            print(_format(row), flush=True)
    if args.only_scaling:
        pass
    elif not args.no_sb3 and _sb3_available():
        row = _in_subprocess("sb3", **common)
        if row:
            print(_format(row), flush=True)
            for ours in comparison:
                print(f"{ours['library']} / sb3-contrib SPS: {ours['sps'] / row['sps']:.1f}x")
            comparison.append(row)
    elif not args.no_sb3:
        print("sb3-contrib not installed (pip install -e .[bench]); skipped")

    scaling_env = args.scaling_env or args.env
    print(
        f"\n2. recurrl scaling on {scaling_env} (env.vectorization {args.scaling_vectorization}; "
        f"rollout: the share of time spent collecting)\n{header}"
    )
    scaling = []
    for core in args.cores.split(","):
        for num_envs in (int(n) for n in args.scaling.split(",")):
            steps = max(args.steps, num_envs * 128 * 2)  # >= 2 timed updates
            row = _in_subprocess(
                "recurrl",
                env_id=scaling_env,
                num_envs=num_envs,
                steps=steps,
                device=args.device,
                bptt_len=args.bptt_len,
                threads=args.threads,
                vectorization=args.scaling_vectorization,
                core=core,
            )
            if row:
                scaling.append(row)
                print(_format(row), flush=True)
    learning = _learning_table(args, common, header) if args.learning_steps else []
    results = {"machine": info, "comparison": comparison, "scaling": scaling, "learning": learning}
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def _learning_table(args: argparse.Namespace, common: dict, header: str) -> list[dict]:
    """Table 3: the same settings trained ``--learning-steps`` per seed by both libraries; the
    final return is the mean over the last episodes of training (recurrl: those of the last
    three updates, 3,072 steps; sb3-contrib: its last 20)."""
    libraries = ["recurrl"] + (["sb3"] if not args.no_sb3 and _sb3_available() else [])
    print(f"\n3. learning on {args.env}, {args.learning_steps:,} steps per run\n{header}")
    rows = []
    for seed in (int(s) for s in args.learning_seeds.split(",")):
        pair = []
        for kind in libraries:
            settings = {**common, "steps": args.learning_steps, "seed": seed}
            if kind == "recurrl":
                settings["bptt_len"] = args.bptt_len
            row = _in_subprocess(kind, **settings)
            if row:
                pair.append(row)
                print(_format(row) + f"   seed {seed}", flush=True)
        if len(pair) == 2:
            ratio = pair[0]["sps"] / pair[1]["sps"]
            print(f"seed {seed}: recurrl / sb3-contrib SPS: {ratio:.1f}x", flush=True)
        rows += pair
    return rows


if __name__ == "__main__":
    sys.exit(main())
