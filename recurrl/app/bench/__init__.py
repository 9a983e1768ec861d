"""Benchmarks (``recurrl bench NAME``, or ``python -m recurrl.app.bench.NAME``)."""

import platform


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows, for table headers."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"
