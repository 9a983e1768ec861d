"""Console progress: a live bar on a terminal, one compact line per update otherwise.

No dependency: the bar is one line redrawn with a carriage return (steps, steps per second,
latest training and evaluation return, ETA). When stdout is not a terminal (a log file, CI, a
suite's worker) each update prints one line instead, which reads well in a file.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``."""
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class LineConsole:
    """One line per update, for logs."""

    def __init__(self, total_steps: int, stream: TextIO) -> None:
        self.total_steps = total_steps
        self.stream = stream

    def update(self, m: dict[str, Any]) -> None:
        line = (
            f"step {m['global_step']:>9,}/{self.total_steps:,}  "
            f"return {_number(m.get('episodic_return'), '9.2f'):>9}  "
            f"len {_number(m.get('episodic_length'), '7.1f'):>7}  sps {m['sps']:7.0f}  "
            f"kl {m['approx_kl']:.4f}  ev {m.get('explained_variance') or 0:+.2f}"
        )
        if m.get("eval_return_mean") is not None:
            line += f"  eval {m['eval_return_mean']:.2f}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to finish."""


class ProgressBar:
    """A single redrawn line: ``[#####-----] steps  sps  return  eval  ETA``.

    Steps per second and the ETA are measured over this process's updates (a resumed run does
    not count the steps it inherited).
    """

    def __init__(self, total_steps: int, stream: TextIO, start_step: int = 0) -> None:
        self.total_steps = total_steps
        self.stream = stream
        self.start_step = start_step
        self.started = time.monotonic()
        self.eval_return: float | None = None
        self.width = 0

    def update(self, m: dict[str, Any]) -> None:
        step = m["global_step"]
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

    def close(self) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()


def make_console(
    total_steps: int, quiet: bool, start_step: int = 0, stream: TextIO | None = None
) -> LineConsole | ProgressBar | None:
    """The bar on a terminal, lines otherwise, nothing when ``quiet``."""
    if quiet:
        return None
    stream = stream or sys.stdout
    if stream.isatty():
        return ProgressBar(total_steps, stream, start_step)
    return LineConsole(total_steps, stream)
