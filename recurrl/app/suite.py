"""Benchmark suites: every experiment of a suite for every seed, then a results table and curves.

A suite is a YAML file::

    name: memory
    overrides: [eval.every=10000]          # applied to every experiment (optional)
    experiments:
      - ../cartpole_novelocity_lstm.yaml   # paths relative to the suite file
      - config: ../cartpole_novelocity_mlp.yaml
        overrides: [ppo.update_epochs=4]   # for this experiment only (optional)

``recurrl suite SUITE.yaml --seeds 3 --jobs 2`` trains each experiment with seeds 1..3, at most
``jobs`` ``recurrl train`` processes at once, each run in ``OUT/<name>/seed<k>`` with its output
in ``OUT/logs``. Run again with the same ``--out`` to continue: finished runs are skipped and
stopped ones resumed. Then ``OUT/results.md`` gets the mean ± std over seeds of the final and
best evaluation return (also as a fraction of the env's optimum where known) and
``OUT/curves.png`` the learning curves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from recurrl.config import ConfigError, load_config, read_yaml
from recurrl.run.run_dir import read_metrics


@dataclass
class Job:
    """One ``recurrl train`` process: an experiment with one seed."""

    name: str
    env_id: str
    seed: int
    run_dir: Path
    command: list[str]
    log: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    returncode: int | None = None


def load_suite(path: str | Path) -> tuple[str, list[tuple[Path, list[str]]]]:
    """``(suite name, [(experiment YAML, overrides), ...])``, every experiment validated."""
    path = Path(path)
    data = read_yaml(path)
    entries = data.get("experiments")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list under 'experiments'")
    shared = [str(o) for o in data.get("overrides", [])]
    experiments = []
    for entry in entries:
        entry = {"config": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or "config" not in entry:
            raise ConfigError(f"{path}: each experiment is a path or has a 'config' key: {entry!r}")
        config_path = (path.parent / entry["config"]).resolve()
        overrides = shared + [str(o) for o in entry.get("overrides", [])]
        load_config(config_path, overrides)  # refuse a bad suite before anything runs
        experiments.append((config_path, overrides))
    return str(data.get("name", path.stem)), experiments


def plan_jobs(suite: str | Path, seeds: int, out: Path, extra: list[str]) -> list[Job]:
    """One job per (experiment, seed); finished runs are left out, stopped ones resumed."""
    _, experiments = load_suite(suite)
    jobs = []
    for config_path, overrides in experiments:
        for seed in range(1, seeds + 1):
            config = load_config(config_path, overrides + extra + [f"seed={seed}"])
            run_dir = out / config.name / f"seed{seed}"
            if (run_dir / "checkpoints" / "final.pt").is_file():
                continue
            train = [sys.executable, "-m", "recurrl", "train", "--eval-episodes=0"]
            if (run_dir / "checkpoints" / "latest.pt").is_file():
                command = [*train, "--resume", str(run_dir), *extra]  # e.g. ppo.total_steps
            else:
                command = [*train, str(config_path), *overrides, *extra]
                command += [f"seed={seed}", f"run.dir={run_dir}"]
            log = out / "logs" / f"{config.name}-seed{seed}.log"
            jobs.append(Job(config.name, config.env.id, seed, run_dir, command, log))
    return jobs


def run_jobs(jobs: list[Job], parallel: int) -> list[Job]:
    """Run ``jobs``, ``parallel`` at a time; a SIGINT/SIGTERM stops every one cleanly."""
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    pending, running = list(jobs), []
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "a") as log:  # a continued run appends
                    # Own session: a terminal's Ctrl-C reaches us only; we forward one SIGTERM.
                    job.process = subprocess.Popen(
                        job.command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=environment,
                        start_new_session=True,
                    )
                job.started = time.monotonic()
                running.append(job)
            time.sleep(0.2)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                job.returncode = job.process.returncode
                status = "done" if job.returncode == 0 else f"FAILED (exit {job.returncode})"
                print(
                    f"[{len(jobs) - len(pending) - len(running)}/{len(jobs)}] {job.name} seed "
                    f"{job.seed}: {status} in {time.monotonic() - job.started:.0f}s",
                    flush=True,
                )
    except KeyboardInterrupt:
        for job in running:
            job.process.send_signal(signal.SIGTERM)  # each run checkpoints and stops
        for job in running:
            job.process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return jobs


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    from recurrl.algo.evaluate import format_mean_std

    return format_mean_std(values)  # 4 significant digits, as the command line prints returns


def _worst(values: list[float]) -> str:
    from recurrl.algo.evaluate import format_return

    return format_return(min(values)) if values else "-"


def _fraction(values: list[float], optimum: float | None) -> str:
    if not values or optimum is None or optimum <= 0:
        return "-"
    return _mean_std([v / optimum for v in values])


def results_table(
    out: Path, suite_name: str, experiments: dict[str, tuple[str, list[Path]]]
) -> str:
    """Markdown: per experiment, mean ± std over seeds of the final and best eval return."""
    from recurrl import envs

    lines = [
        f"# Suite {suite_name}",
        "",
        "Mean ± std over seeds. *final*: the last evaluation; *worst seed*: the lowest final "
        "evaluation of any seed; *best*: the best evaluation of "
        "a run; *fraction*: return / the env's optimal return (where known and positive); "
        "*training*: mean episodic return over the last 10% of updates.",
        "",
        "| experiment | env | seeds | final eval return | worst seed (final) | best eval return "
        "| final fraction | best fraction | training return |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (env_id, run_dirs) in experiments.items():
        finals, bests, training = [], [], []
        for run_dir in run_dirs:
            records = read_metrics(run_dir)
            evals = [
                r["eval_return_mean"] for r in records if r.get("eval_return_mean") is not None
            ]
            if evals:
                finals.append(evals[-1])
                bests.append(max(evals))
            returns = [
                r["episodic_return"] for r in records if r.get("episodic_return") is not None
            ]
            if returns:
                training.append(float(np.mean(returns[-max(1, len(returns) // 10) :])))
        optimum = envs.ENVIRONMENTS.get(env_id.split(":")[-1], {}).get("optimal_return")
        lines.append(
            f"| {name} | {env_id} | {len(run_dirs)} | {_mean_std(finals)} | {_worst(finals)} "
            f"| {_mean_std(bests)} "
            f"| {_fraction(finals, optimum)} | {_fraction(bests, optimum)} "
            f"| {_mean_std(training)} |"
        )
    return "\n".join(lines) + "\n"


def run_suite(
    suite: str | Path,
    seeds: int,
    parallel: int = 1,
    out: str | Path | None = None,
    extra: list[str] = (),
) -> tuple[Path, list[Job]]:
    """Train every experiment for seeds 1..``seeds``; write ``results.md`` and ``curves.png``.

    Returns the output folder and the jobs run now (``returncode`` set; nonzero = failed).
    """
    name, _ = load_suite(suite)
    out = Path(out) if out else default_out(suite)
    jobs = plan_jobs(suite, seeds, out, list(extra))
    print(f"suite {name}: {len(jobs)} runs to do in {out} ({parallel} at a time)", flush=True)
    run_jobs(jobs, parallel)
    write_report(suite, seeds, out, list(extra))
    return out, jobs


def default_out(suite: str | Path) -> Path:
    """``runs/suites/<suite name>-<timestamp>``."""
    name, _ = load_suite(suite)
    return Path("runs") / "suites" / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def write_report(suite: str | Path, seeds: int, out: Path, extra: list[str]) -> None:
    """``results.md`` and (with matplotlib) ``curves.png`` from the suite's run folders."""
    from recurrl.app.plot import PlotError, plot_runs

    name, experiments = load_suite(suite)
    groups: dict[str, tuple[str, list[Path]]] = {}
    for config_path, overrides in experiments:
        config = load_config(config_path, overrides + extra)
        runs = [out / config.name / f"seed{s}" for s in range(1, seeds + 1)]
        groups[config.name] = (config.env.id, [r for r in runs if (r / "metrics.jsonl").is_file()])
    (out / "results.md").write_text(results_table(out, name, groups))
    print(f"wrote {out / 'results.md'}", flush=True)
    try:
        run_dirs = [r for _, runs in groups.values() for r in runs]
        print(f"wrote {plot_runs(run_dirs, out / 'curves.png')}", flush=True)
    except PlotError as error:
        print(f"recurrl: no curves.png: {error}", file=sys.stderr)
