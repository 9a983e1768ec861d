"""``recurrl`` command line: train (and resume), eval, export, plot, suite, probe, keys, envs,
bench."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from recurrl.config import ConfigError

# An RST role such as :class:`ConfigError` or :func:`~recurrl.config.load_config`.
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|obj|data|exc):`~?([^`]*)`")


def plain_text(doc: str, markdown: bool = False) -> str:
    """A docstring as text for the terminal: RST roles and double backticks dropped.

    With ``markdown=True`` code stays marked with single backticks. Line breaks and indentation
    are kept; callers that want one line join the words themselves.
    """
    doc = _ROLE.sub(r"`\1`" if markdown else r"\1", doc)
    return doc.replace("``", "`" if markdown else "")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a refused argument is one line on stderr (exit 2): the error, then where
    the usage is, instead of the usage block and then the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (argparse names the option in its message)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _train(args: argparse.Namespace) -> int:
    """Train (or resume); under torchrun every rank runs this, rank 0 reads the config and
    checkpoint and hands them to the others, logs and prints the summary."""
    from recurrl.algo.distributed import close_world, setup_world
    from recurrl.errors import TrainingError
    from recurrl.run.agent import PPO
    from recurrl.run.checkpoints import CheckpointError

    world = setup_world()
    refused = (ConfigError, CheckpointError)
    try:
        config, payload = world.run_on_main(lambda: _load_run(args), refused)
        quiet = args.quiet or not world.is_main
        model = PPO(
            config=config, resume=payload, quiet=quiet, summary=args.eval_episodes, world=world
        )
        result = model.learn().result  # the summary is printed by its callback
    except BaseException as error:
        # Errors every rank raises together may wait for the others; after any other, leave.
        close_world(world, clean=isinstance(error, (*refused, TrainingError, SystemExit)))
        raise
    close_world(world)
    if result.interrupted is not None:
        return 128 + result.interrupted  # the message saying how to resume is printed
    return 0


def _load_run(args: argparse.Namespace):
    """``(config, checkpoint payload or None)`` from the command line (the config built as
    ``recurrl.PPO`` builds it)."""
    from recurrl.run.agent import build_config

    # The config path and the overrides in any order: the path is the first word that is not
    # a dotted.key=value (a file whose name holds "=" is still a path); overrides keep order.
    words = ([args.config] if args.config is not None else []) + list(args.overrides)
    words += [w for w in args.extra if not w.startswith("-")]  # words after an option
    paths = [i for i, w in enumerate(words) if "=" not in w or Path(w).is_file()]
    path = words.pop(paths[0]) if paths else None
    overrides = words + [w for w in args.extra if w.startswith("-")]  # --key=value
    if not args.resume:
        return build_config(path, overrides), None
    from recurrl.run.resume import resume_checkpoint, resume_config

    if path is not None:
        raise ConfigError(
            f"--resume takes the config from the checkpoint; got {path!r} "
            f"(pass changes as dotted.key=value)"
        )
    run_dir, payload = resume_checkpoint(args.resume)
    return resume_config(run_dir, payload, overrides), payload


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from recurrl.algo.evaluate import evaluate, format_mean_std, format_return
    from recurrl.algo.make_env import make_vector_env
    from recurrl.config import config_from_dict
    from recurrl.run.checkpoints import (
        check_spaces,
        load_checkpoint,
        policy_from_checkpoint,
        resolve_checkpoint_path,
    )

    path = resolve_checkpoint_path(args.checkpoint)
    payload = load_checkpoint(path)
    env_config = config_from_dict(payload["config"]).env
    envs = make_vector_env(env_config, 1)  # the env may have changed since training
    envs.close()
    check_spaces(payload, envs.single_observation_space, envs.single_action_space, env_config.id)
    policy, config = policy_from_checkpoint(payload)
    deterministic = not args.stochastic  # greedy by default, as the training summary
    mode = "deterministic" if deterministic else "stochastic"
    if args.video:
        from recurrl.app.video import record_episode, write_video

        frames, total, fps = record_episode(policy, config.env, deterministic, args.seed)
        written = write_video(frames, args.video, fps=args.fps or fps)
        print(f"video: {written} ({len(frames)} frames, return {format_return(total)}, {mode})")
    returns = evaluate(policy, config.env, args.episodes, deterministic, seed=args.seed)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(f"return {format_mean_std(returns)} over {len(returns)} episodes ({mode})")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = Path(args.out) if args.out else run_dir / "eval.json"
    out.write_text(
        json.dumps(
            {
                "checkpoint": str(path),
                "env_id": config.env.id,
                "episodes": len(returns),
                "mode": mode,
                "deterministic": deterministic,
                "mean": mean,
                "std": std,
                "returns": returns,
            },
            indent=2,
        )
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from recurrl.app.plot import plot_runs

    out = plot_runs(
        args.run_dirs, args.out, x=args.x, smoothing=args.smooth, normalize=args.normalize
    )
    print(f"wrote {out}")
    return 0


def _suite(args: argparse.Namespace) -> int:
    from recurrl.app.suite import default_out, run_suite

    out = args.out or default_out(args.suite)
    try:
        _, jobs = run_suite(args.suite, args.seeds, args.jobs, out, args.overrides)
    except KeyboardInterrupt:
        again = " ".join([args.suite, *args.overrides, f"--seeds {args.seeds}"])
        print(
            f"recurrl: suite stopped, each run with a checkpoint; continue with: recurrl suite "
            f"{again} --jobs {args.jobs} --out {out}",
            file=sys.stderr,
        )
        return 130
    failed = [job for job in jobs if job.returncode != 0]
    for job in failed:
        print(f"recurrl: {job.name} seed {job.seed} failed; see {job.log}", file=sys.stderr)
    return 1 if failed else 0


def _keys(args: argparse.Namespace) -> int:
    print(keys_markdown() if args.markdown else keys_text(), end="")
    return 0


def keys_text() -> str:
    """Every config key, its type, default and docstring, one plain-text line each."""
    from recurrl.config import field_docs

    rows = [(key, kind, repr(default), doc) for key, kind, default, doc in field_docs()]
    key_width, type_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    lines = []
    for key, type_name, default, doc in rows:
        doc = " ".join(plain_text(doc).split())
        line = f"{key:<{key_width}}  {type_name:<{type_width}}  {default:<14}  {doc}"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def keys_markdown() -> str:
    """``docs/configuration.md``: the same rows as a Markdown table under a short header."""
    from recurrl.config import field_docs

    lines = [
        "# Configuration keys",
        "",
        "Generated by `recurrl keys --markdown > docs/configuration.md` from the field docstrings",
        "in `recurrl/config.py`; `tests/test_docs.py` fails when this file is out of date.",
        "",
        "An experiment YAML nests these keys (`ppo: {bptt_len: 8}`); on the command line each is",
        "a dotted override (`ppo.bptt_len=8`, or `--ppo.bptt_len=8` as `wandb agent` passes it).",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, type_name, default, doc in field_docs():
        doc = " ".join(plain_text(doc, markdown=True).split()).replace("|", "\\|")
        type_name = type_name.replace(" | ", " or ")
        lines.append(f"| `{key}` | {type_name} | `{default!r}` | {doc} |")
    return "\n".join(lines) + "\n"


def _envs(args: argparse.Namespace) -> int:
    from recurrl import envs

    print(f"{'id':<36} {'memory':<34} {'optimal':>8}  memoryless")
    for env_id, facts in envs.ENVIRONMENTS.items():
        print(
            f"{env_id:<36} {str(facts.get('memory', '')):<34} "
            f"{str(facts.get('optimal_return', '')):>8}  {facts.get('memoryless_return', '')}"
        )
        bounds = facts.get("difficulty_bounds", {})
        for knob, default in facts.get("difficulty", {}).items():
            print(f"    {knob:<17} {default!s:<6}  {bounds.get(knob, '')}".rstrip())
    print(
        "\nIndented: each env's difficulty knobs, their defaults and the values accepted.\n"
        "Set one with env.kwargs.KNOB=VALUE, e.g. env.kwargs.length=40."
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write the policy's acting step (state explicit) and print how to call it."""
    from recurrl.policy.export import FORMATS, ExportError, export_policy
    from recurrl.run.checkpoints import load_policy, resolve_checkpoint_path

    if args.format not in FORMATS:  # before loading anything
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    path = resolve_checkpoint_path(args.run_dir)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = Path(args.out) if args.out else run_dir / f"policy{FORMATS[args.format]}"
    signature = export_policy(load_policy(path), out, args.format)
    print(f"wrote {out} ({args.format}, from {path}); signature in {out}.json")
    print(signature.describe())
    return 0


def _probe(args: argparse.Namespace) -> int:
    """Memory horizon and start-state drift of a trained policy (``recurrl.app.probe``)."""
    from recurrl.app.probe import format_summary, probe_run

    summary = probe_run(
        args.run_dir,
        args.episodes,
        args.lags,
        args.epochs,
        args.out,
        args.seed,
        args.envs,
        args.state_episodes,
    )
    print(format_summary(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="recurrl", description=plain_text(__doc__))
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train from a YAML experiment")
    train.add_argument("config", nargs="?", help="experiment YAML (omit for all defaults)")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoints/latest.pt"
    )
    train.add_argument("--quiet", action="store_true", help="no per-update lines")
    train.add_argument(
        "--eval-episodes",
        type=non_negative_int,
        default=10,
        help="final evaluation episodes, greedy actions (default 10; 0: none)",
    )
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint or run folder")
    evaluate.add_argument(
        "checkpoint", help="run folder (its checkpoints/final.pt or latest.pt) or a .pt file"
    )
    evaluate.add_argument(
        "--episodes", type=positive_int, default=20, help="episodes to evaluate (default 20)"
    )
    mode = evaluate.add_mutually_exclusive_group()
    mode.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions from the policy (default: greedy, as the training summary)",
    )
    mode.add_argument(
        "--deterministic",
        action="store_true",
        help="greedy actions: the default (kept for older scripts)",
    )
    evaluate.add_argument(
        "--seed",
        type=non_negative_int,
        default=12345,
        help="seed of the evaluation envs (default 12345)",
    )
    evaluate.add_argument("--out", help="where to write eval.json (default: the run folder)")
    evaluate.add_argument("--video", metavar="PATH", help="also record one episode (.gif, .mp4)")
    evaluate.add_argument(
        "--fps", type=positive_int, help="frames per second of --video (default: env's)"
    )
    evaluate.set_defaults(func=_eval)

    plot = commands.add_parser(
        "plot", help="learning curves: a panel per env, mean ± std over seeds"
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or parents")
    plot.add_argument("--out", default="curves.png", help="image file (default curves.png)")
    plot.add_argument("--x", choices=["steps", "wall"], default="steps", help="x axis")
    plot.add_argument(
        "--smooth",
        type=positive_int,
        default=1,
        metavar="N",
        help="moving average over N points (1: none)",
    )
    plot.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        help="returns / the env's optimum (default: when the runs are on more than one env)",
    )
    plot.set_defaults(func=_plot)

    suite = commands.add_parser("suite", help="run a benchmark suite over seeds, then report")
    suite.add_argument("suite", help="suite YAML (e.g. experiments/suites/memory.yaml)")
    suite.add_argument("overrides", nargs="*", help="dotted.key=value for every run")
    suite.add_argument("--seeds", type=positive_int, default=3, help="seeds 1..N per experiment")
    suite.add_argument("--jobs", type=positive_int, default=1, help="training processes at once")
    suite.add_argument("--out", help="suite folder (default runs/suites/<name>-<time>)")
    suite.set_defaults(func=_suite)

    keys = commands.add_parser("keys", help="list every config key with its default")
    keys.add_argument("--markdown", action="store_true", help="as a Markdown table")
    keys.set_defaults(func=_keys)
    envs = commands.add_parser("envs", help="list the registered recurrl environments")
    envs.set_defaults(func=_envs)
    export = commands.add_parser(
        "export", help="write the policy as ONNX or TorchScript, recurrent state explicit"
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="run folder or checkpoint file")
    export.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    export.add_argument("--out", help="file to write (default RUN_DIR/policy.onnx or policy.pt)")
    export.set_defaults(func=_export)
    probe = commands.add_parser(
        "probe", help="what a policy remembers: memory horizon, state probe, stale start states"
    )
    probe.add_argument("run_dir", metavar="RUN_DIR", help="run folder or checkpoint file")
    probe.add_argument(
        "--episodes", type=positive_int, default=8, help="greedy episodes played (default 8)"
    )
    probe.add_argument("--envs", type=positive_int, default=8, help="envs playing them (default 8)")
    probe.add_argument(
        "--lags",
        type=positive_int,
        help="lags 0..K of the horizon curves (default 64, or less for shorter episodes)",
    )
    probe.add_argument(
        "--epochs",
        type=non_negative_int,
        default=4,
        help="PPO epochs of the drift check (default 4; 0: no drift check)",
    )
    probe.add_argument(
        "--state-episodes",
        type=non_negative_int,
        default=256,
        help="greedy episodes of the state probe (default 256; 0: no state probe)",
    )
    probe.add_argument("--out", help="folder to write (default RUN_DIR/probe)")
    probe.add_argument("--seed", type=non_negative_int, default=0, help="env seed (default 0)")
    probe.set_defaults(func=_probe)
    bench = commands.add_parser(
        "bench", help="benchmarks: cells, train, envs (each prints a table, writes JSON)"
    )
    bench.add_argument("target", choices=sorted(BENCHMARKS))
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    return parser


BENCHMARKS = {
    "cells": "recurrl.app.bench.cells",
    "train": "recurrl.app.bench.train",
    "envs": "recurrl.app.bench.envs",
}


def _bench(argv: list[str]) -> int:
    """``recurrl bench TARGET [options]``: hand the options to that benchmark's ``main``."""
    import importlib

    if not argv or argv[0] not in BENCHMARKS:
        build_parser().parse_args(["bench", *argv[:1]])  # prints usage and exits 2
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = [e for e in extra]  # `wandb agent` passes --key=value
    from recurrl.app.plot import PlotError
    from recurrl.app.probe import ProbeError
    from recurrl.app.video import VideoError
    from recurrl.errors import EnvStepError, TrainingError
    from recurrl.run.checkpoints import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, PlotError, ProbeError, VideoError) as error:
        print(f"recurrl: error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:  # a run that started and could not go on
        if isinstance(error, EnvStepError) and error.__cause__ is not None:
            import traceback

            print("recurrl: the env's error:", file=sys.stderr)
            traceback.print_exception(error.__cause__, file=sys.stderr)
        print(f"recurrl: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recurrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
