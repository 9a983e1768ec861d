"""The console, as callbacks: a start banner, progress, and the summary at the end.

No dependency: on a terminal the bar is one line redrawn with a carriage return (steps, steps
per second, latest training and evaluation return, ETA). When stdout is not a terminal (a log
file, CI, a suite's worker) each update prints one line instead, which reads well in a file.
The step target shown is the step the run really ends at: ``ppo.total_steps`` rounded up to
whole updates (said so in the banner), so progress never reads past its target.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from gymnasium import spaces

from recurrl.run.callbacks import Callback, RunInfo


def _number(value: Any, fmt: str) -> str:
    """``value`` formatted, or ``-`` for none (an update in which no episode ended: NaN)."""
    return "-" if value is None or value != value else format(value, fmt)


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``."""
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def describe_space(space: Any) -> str:
    """A space on one line: a ``Box`` whose bounds differ per element as its range, not as the
    two arrays (a frame-stacked ``Box`` printed 9 lines); a long ``MultiDiscrete`` by its sizes."""
    if isinstance(space, spaces.Box) and space.shape and str(space).count("\n"):
        low, high = float(space.low.min()), float(space.high.max())
        return f"Box({low:g} to {high:g} per element, {space.shape}, {space.dtype})"
    if isinstance(space, spaces.MultiDiscrete) and str(space).count("\n"):
        low, high = int(space.nvec.min()), int(space.nvec.max())
        values = f"{low}" if low == high else f"{low} to {high}"
        return f"MultiDiscrete({values} values per element, {space.shape})"
    return str(space)


def banner(info: RunInfo) -> list[str]:
    """The start banner: run folder, env and spaces, policy, device and cells, the target."""
    envs = f"{info.num_envs} envs" + (f" x {info.world_size} ranks" if info.world_size > 1 else "")
    config = info.config
    lines = [
        f"recurrl: run folder {info.run_dir}",
        f"  env {info.env_id} ({envs})",
        f"    observation {describe_space(info.observation_space)}",
        f"    action {describe_space(info.action_space)}",
        f"  policy: {info.core} core, {info.parameters:,} parameters; device {info.device}, "
        f"cells {info.cells}",
    ]
    previous = {"prev_action": "previous action", "prev_reward": "previous reward"}
    inputs = [words for key, words in previous.items() if getattr(config.policy, key)]
    if inputs:
        lines.append(f"    also reads the {' and '.join(inputs)}")
    lines += wide_input_hint(info.encoder_inputs, config.policy.encoder_sizes)
    target = f"  steps: {info.total_steps:,}"
    if info.total_steps != config.ppo.total_steps:
        target += (
            f" (ppo.total_steps {config.ppo.total_steps:,} rounded up to whole updates of "
            f"{info.steps_per_update:,})"
        )
    lines.append(target)
    if info.start_step:
        lines.append(f"  resumed from step {info.start_step:,}")
    return lines + [f"  {note}" for note in info.notes]


def wide_input_hint(inputs: list[int], encoder_sizes: list[int] | str) -> list[str]:
    """A banner line when an observation is over twice as wide as the encoder's first layer.

    ``policy.encoder_sizes: auto`` already widens for such observations (``resolve_sizes`` in
    :mod:`recurrl.policy.actor_critic`); this is for a narrow encoder set by hand. Measured
    (docs/defaults.md, round 7): POPGym's Concentration, a 156-wide one-hot board, scores -0.38 /
    -0.51 with a 256-wide encoder and core against -0.75 / -0.70 with 64 / 128.
    """
    widest = max(inputs, default=0)
    if isinstance(encoder_sizes, str) or not encoder_sizes or widest <= 2 * encoder_sizes[0]:
        return []
    return [
        f"    observation has {widest} features for a {encoder_sizes[0]}-unit encoder layer; "
        f"wide observations learnt better with policy.encoder_sizes=[256] "
        f"policy.hidden_size=256 (docs/defaults.md)"
    ]


class Console(Callback):
    """The start banner, then one display per update (see :func:`make_console`)."""

    def __init__(self, total_steps: int, stream: TextIO, start_step: int = 0) -> None:
        self.total_steps = total_steps
        self.stream = stream
        self.start_step = start_step

    def on_start(self, info: RunInfo) -> None:
        self.total_steps, self.start_step = info.total_steps, info.start_step
        print("\n".join(banner(info)), file=self.stream, flush=True)


class LineConsole(Console):
    """One line per update, for logs."""

    def on_update(self, m: dict[str, Any]) -> None:
        line = (
            f"step {min(m['global_step'], self.total_steps):>9,}/{self.total_steps:,}  "
            f"return {_number(m.get('episodic_return'), '9.2f'):>9}  "
            f"len {_number(m.get('episodic_length'), '7.1f'):>7}  sps {m['sps']:7.0f}  "
            f"kl {m['approx_kl']:.4f}  ev {m.get('explained_variance') or 0:+.2f}"
        )
        if m.get("eval_return_mean") is not None:
            line += f"  eval {m['eval_return_mean']:.2f}"
        print(line, file=self.stream, flush=True)


class ProgressBar(Console):
    """A single redrawn line: ``[#####-----] steps  sps  return  eval  ETA``.

    Steps per second and the ETA are measured over this process's updates (a resumed run does
    not count the steps it inherited).
    """

    def __init__(self, total_steps: int, stream: TextIO, start_step: int = 0) -> None:
        super().__init__(total_steps, stream, start_step)
        self.started = time.monotonic()
        self.eval_return: float | None = None
        self.width = 0

    def on_start(self, info: RunInfo) -> None:
        super().on_start(info)
        self.started = time.monotonic()

    def on_update(self, m: dict[str, Any]) -> None:
        step = min(m["global_step"], self.total_steps)
        elapsed = time.monotonic() - self.started
        sps = (step - self.start_step) / elapsed if elapsed > 0 else m["sps"]
        eta = (self.total_steps - step) / sps if sps > 0 else 0.0
        if m.get("eval_return_mean") is not None:
            self.eval_return = m["eval_return_mean"]
        done = min(1.0, step / self.total_steps)
        bar = "#" * int(done * 20) + "-" * (20 - int(done * 20))
        text = (
            f"[{bar}] {step:,}/{self.total_steps:,} steps  {sps:,.0f} sps  "
            f"return {_number(m.get('episodic_return'), '.1f')}  "
            f"eval {_number(self.eval_return, '.1f')}  eta {format_duration(eta)}"
        )
        columns = shutil.get_terminal_size((100, 20)).columns
        text = text[: columns - 1]
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def on_end(self, result: Any) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()


def make_console(
    total_steps: int, quiet: bool, start_step: int = 0, stream: TextIO | None = None
) -> LineConsole | ProgressBar | None:
    """The bar on a terminal, lines otherwise, nothing when ``quiet``; ``total_steps`` and
    ``start_step`` are replaced by the run's in ``on_start``."""
    if quiet:
        return None
    stream = stream or sys.stdout
    if stream.isatty():
        return ProgressBar(total_steps, stream, start_step)
    return LineConsole(total_steps, stream)


class Summary(Callback):
    """At the end of a finished run: the return at the start vs the end of training, and the
    final policy's over ``eval_episodes`` deterministic episodes, against the env's optimum."""

    def __init__(self, eval_episodes: int = 10, stream: TextIO | None = None) -> None:
        self.eval_episodes, self.stream = eval_episodes, stream
        self.info: RunInfo | None = None

    def on_start(self, info: RunInfo) -> None:
        self.info = info

    def on_end(self, result: Any) -> None:
        if result is None or result.interrupted is not None or self.info.rank != 0:
            return
        print(self.text(result), file=self.stream or sys.stdout, flush=True)

    def text(self, result: Any) -> str:
        import numpy as np

        from recurrl import envs
        from recurrl.algo.evaluate import evaluate, format_mean_std, format_return

        config = self.info.config
        returns = [m["episodic_return"] for m in result.history]
        returns = [r for r in returns if r is not None and r == r]  # updates where episodes ended
        tenth = max(1, len(returns) // 10)
        first = format_return(np.mean(returns[:tenth])) if returns else "-"
        last = format_return(np.mean(returns[-tenth:])) if returns else "-"
        seconds = result.history[-1]["time_s"] if result.history else 0.0
        facts = envs.ENVIRONMENTS.get(config.env.id.split(":")[-1], {})
        optimum = facts.get("optimal_return")
        if isinstance(optimum, (int, float)):
            optimum = format_return(optimum)
        optimum_text = f" (optimum {optimum})" if optimum is not None else ""
        lines = [
            f"trained {result.global_step:,} steps in {seconds:.0f}s"
            + (f" (stopped by {result.stopped_by})" if result.stopped_by else ""),
            f"training return: {first} (first 10% of updates) -> {last} (last 10%){optimum_text}",
        ]
        if self.eval_episodes > 0 and self._can_evaluate():
            final = evaluate(
                result.policy, config.env, self.eval_episodes, True, 10_000, env=self.info.eval_env
            )
            lines.append(
                f"final policy: return {format_mean_std(final)} over {len(final)} episodes "
                f"(deterministic){optimum_text}"
            )
        lines.append(f"run folder: {result.run_dir}  (recurrl eval {result.run_dir})")
        return "\n".join(lines)

    def _can_evaluate(self) -> bool:
        from recurrl.algo.make_env import PASSED

        return self.info.eval_env is not None or not self.info.config.env.id.startswith(PASSED)


def describe_cells(policy: Any, device: Any, batch: int) -> str:
    """Which implementation runs the policy's recurrent cells when acting on ``batch`` envs:
    ``native``, ``fused``, ``triton``, ``reference``, ``scan`` (mingru), ``python loop`` (layer
    norm), ``window`` (transformer and tcn: each step recomputed over its cached window) or
    ``none``."""
    import torch

    from recurrl.nn import GRU, LSTM
    from recurrl.nn.attention import CausalTransformer
    from recurrl.nn.cores import resolve_impl
    from recurrl.nn.elman import RNN
    from recurrl.nn.mingru import MinGRU
    from recurrl.nn.tcn import TCN
    from recurrl.policy.layernorm import LayerNormGRU, LayerNormLSTM

    for module in policy.modules():
        if isinstance(module, RNN | MinGRU):
            return module._implementation(torch.empty(0, device=device))
        if isinstance(module, LSTM | GRU):
            gates = module.gate_multiplier * module.hidden_size
            macs = batch * gates * module.hidden_size
            return resolve_impl(module.impl, torch.device(device), torch.float32, macs)
        if isinstance(module, LayerNormLSTM | LayerNormGRU):
            return "python loop (layer norm)"
        if isinstance(module, CausalTransformer | TCN):
            return "window"
    return "none"
