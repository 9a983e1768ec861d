"""Recurrent cell speed: forward + backward over ``[T, B]`` sequences with episode starts.

For LSTM and GRU (and, asked with ``--cells``, the Elman RNN, minGRU, the windowed transformer
and the TCN) at several
``(T, B, H)`` (input size = H, 2% episode starts), the median time of one forward + backward
pass (gradients of the input and every parameter) of:

* ``ours``: ``recurrl.nn.LSTM``/``GRU`` with the default implementation (``impl="auto"``: on
  CPU the C kernels of ``recurrl.nn.native`` up to ``NATIVE_MAX_MACS`` per step, else ``fused``;
  the ``impl`` column says which);
* ``fused``: ``impl="fused"`` (the pure-PyTorch whole-sequence Functions);
* ``triton``: ``impl="triton"`` (one Triton kernel launch per layer; only on CUDA with triton
  installed, where ``auto`` picks it for float32);
* ``reference``: the same module with ``impl="reference"`` (the readable definition);
* ``vendor``: ``torch.nn.LSTM``/``GRU`` over the whole sequence *without* resets (the floor: the
  vendor kernel cannot reset inside a sequence);
* ``per_step``: ``torch.nn.LSTMCell``/``GRUCell`` stepped one timestep at a time in Python with the
  state masked at episode starts (what sb3-contrib and CleanRL do in training).

``rnn`` (:class:`recurrl.nn.RNN`) has ``ours`` (= ``fused``), ``fused``, ``reference``, ``vendor``
(``torch.nn.RNN``) and ``per_step`` (``torch.nn.RNNCell``); ``mingru`` (:class:`recurrl.nn.MinGRU`)
has ``ours`` (its parallel scan) and ``reference`` (its step loop) only: no vendor module, no
fused Function; so have ``transformer`` (:class:`recurrl.nn.CausalTransformer`, one layer,
``context`` 32: ``ours`` is the masked attention over the whole chunk) and ``tcn``
(:class:`recurrl.nn.TCN`, ``context`` 32, receptive field 64), whose ``reference`` is one step
at a time as acting runs it. A candidate a cell lacks prints as ``-`` (``null`` in the JSON), as
do the ratios that need it.

Candidates are interleaved (the order rotates every repeat) so that load from other processes
falls on all of them alike; medians are over ``--repeats`` after ``--warmup`` passes. On a shared
machine, ``--threads 1`` gives steadier numbers: with more intra-op threads than free cores every
candidate stalls in OpenMP barriers, by up to 10x.

Usage::

    python -m recurrl.app.bench.cells --out cells.json
    python -m recurrl.app.bench.cells --shapes 128x16x64,32x256x256 --repeats 9 --threads 1
    python -m recurrl.app.bench.cells --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from recurrl.app.bench import cpu_model
from recurrl.app.cli import ArgumentParser, non_negative_int, plain_text, positive_int
from recurrl.nn import GRU, LSTM, RNN, TCN, CausalTransformer, MinGRU, native, triton_kernels
from recurrl.nn.cores import resolve_impl

SHAPES = [(128, 64, 128), (32, 256, 256), (128, 16, 64), (512, 32, 128)]
CANDIDATES = ("ours", "fused", "triton", "reference", "vendor", "per_step")
CELLS = {
    "lstm": (LSTM, torch.nn.LSTM, torch.nn.LSTMCell),
    "gru": (GRU, torch.nn.GRU, torch.nn.GRUCell),
    "rnn": (RNN, torch.nn.RNN, torch.nn.RNNCell),
    "mingru": (MinGRU, None, None),
    "transformer": (CausalTransformer, None, None),
    "tcn": (TCN, None, None),
}
ONLY_OURS = {"fused", "triton", "vendor", "per_step"}
LACKING = {"rnn": {"triton"}, "mingru": ONLY_OURS, "transformer": ONLY_OURS, "tcn": ONLY_OURS}
"""Candidates a cell has no implementation of (left out of its rows)."""
AUTO_IMPL = {"rnn": "fused", "mingru": "scan", "transformer": "chunk", "tcn": "chunk"}
"""What ``impl="auto"`` always runs for the cells outside :func:`resolve_impl`."""
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def machine(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch version and threads, and the GPU if one is used."""
    model = cpu_model()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": gpu,
        "native_kernels": (
            f"built for {native.loaded_variant()}"
            if native.available()
            else native.unavailable_reason()
        ),
    }


def candidate_names(device: torch.device) -> list[str]:
    """The candidates run on ``device``: ``triton`` only on CUDA with triton installed."""
    on_gpu = device.type == "cuda" and triton_kernels.available(device)
    return [name for name in CANDIDATES if name != "triton" or on_gpu]


def per_step_loop(cell: torch.nn.Module, x: Tensor, keep: Tensor, state: Any) -> Tensor:
    """The per-timestep masked loop: ``state *= keep[t]`` then one cell call per step.

    Args:
        cell: ``torch.nn.LSTMCell`` or ``GRUCell``.
        x: ``[T, B, I]``; keep: ``[T, B, 1]`` (0 at episode starts).
        state: ``(h, c)`` (LSTM) or ``h`` (GRU), each ``[B, H]``.

    Returns:
        ``y[T, B, H]``.
    """
    outputs = []
    for t in range(x.shape[0]):
        if isinstance(state, tuple):
            state = cell(x[t], (state[0] * keep[t], state[1] * keep[t]))
            outputs.append(state[0])
        else:
            state = cell(x[t], state * keep[t])
            outputs.append(state)
    return torch.stack(outputs)


def build_candidates(
    cell: str, shape: tuple[int, int, int], device: torch.device, reset_prob: float
) -> dict[str, Callable[[], None]]:
    """One closure per candidate that runs forward + backward once on fixed random data."""
    ours_cls, vendor_cls, cell_cls = CELLS[cell]
    steps, batch, hidden = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, hidden, generator=generator).to(device).requires_grad_()
    dy = torch.randn(steps, batch, hidden, generator=generator).to(device)
    episode_start = (torch.rand(steps, batch, generator=generator) < reset_prob).to(device)
    keep = (~episode_start).to(x.dtype).unsqueeze(-1)  # (T, B, 1)
    ours = ours_cls(hidden, hidden).to(device)
    lacking = LACKING.get(cell, set())
    reference = ours_cls(hidden, hidden, impl="reference").to(device)
    fused = None if "fused" in lacking else ours_cls(hidden, hidden, impl="fused").to(device)
    triton = None if "triton" in lacking else ours_cls(hidden, hidden, impl="triton").to(device)
    vendor = None if vendor_cls is None else vendor_cls(hidden, hidden).to(device)
    per_step = None if cell_cls is None else cell_cls(hidden, hidden).to(device)
    zero = torch.zeros(batch, hidden, device=device)
    cell_state = (zero, zero) if cell == "lstm" else zero

    def backward(module: torch.nn.Module, y: Tensor) -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        y.backward(dy)

    candidates = {
        "ours": lambda: backward(ours, ours(x, None, episode_start)[0]),
        "triton": lambda: backward(triton, triton(x, None, episode_start)[0]),
        "reference": lambda: backward(reference, reference(x, None, episode_start)[0]),
        "fused": lambda: backward(fused, fused(x, None, episode_start)[0]),
        "vendor": lambda: backward(vendor, vendor(x)[0]),
        "per_step": lambda: backward(per_step, per_step_loop(per_step, x, keep, cell_state)),
    }
    return {name: candidates[name] for name in candidate_names(device) if name not in lacking}


def auto_impl(cell: str, shape: tuple[int, int, int], device: torch.device) -> str:
    """What ``impl="auto"`` runs for ``cell`` at ``shape`` (float32)."""
    if cell in AUTO_IMPL:
        return AUTO_IMPL[cell]
    _, batch, hidden = shape
    gates = GATES[cell] * hidden
    return resolve_impl("auto", device, torch.float32, batch * gates * hidden)


def time_candidates(
    candidates: dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each candidate, interleaved with a rotating order."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for run in candidates.values():
        for _ in range(warmup):
            run()
    sync()
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            candidates[name]()
            sync()
            times[name].append(1e3 * (time.perf_counter() - start))
    return times


def summarize(
    cell: str, shape: tuple[int, int, int], impl: str, times: dict[str, list[float]]
) -> dict:
    """Medians and the ratios the targets are stated in (None where a candidate is missing)."""
    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}

    def ratio(top: str, bottom: str) -> float | None:
        if top not in median or bottom not in median:
            return None
        return median[top] / median[bottom]

    return {
        "cell": cell,
        "T": shape[0],
        "B": shape[1],
        "H": shape[2],
        "impl": impl,
        "median_ms": median,
        "min_ms": fastest,
        "times_ms": times,
        "ours_over_vendor": ratio("ours", "vendor"),
        "per_step_over_ours": ratio("per_step", "ours"),
        "per_step_over_vendor": ratio("per_step", "vendor"),
        "reference_over_ours": ratio("reference", "ours"),
    }


def table_header(names: list[str], cell_width: int = 5) -> str:
    """Column titles of :func:`table_row` for the candidates ``names``, and a rule under them."""
    header = (
        f"{'cell':<{cell_width}} {'T':>4} {'B':>4} {'H':>4} {'impl':>6} "
        + " ".join(f"{name + ' ms':>13}" for name in names)
        + f" {'ours/vendor':>12} {'per_step/ours':>14} {'per_step/vendor':>16} {'ref/ours':>9}"
    )
    return header + "\n" + "-" * len(header)


def table_row(row: dict, names: list[str] | None = None, cell_width: int = 5) -> str:
    """One line: median ms per candidate (``names``, default those the row has; ``-`` for one
    it lacks) and the ratios the targets are stated in."""
    names = names or [name for name in CANDIDATES if name in row["median_ms"]]
    medians = row["median_ms"]

    def times(value: float | None, width: int) -> str:
        return f"{'-':>{width + 1}}" if value is None else f"{value:>{width}.2f}x"

    return (
        f"{row['cell']:<{cell_width}} {row['T']:>4} {row['B']:>4} {row['H']:>4} {row['impl']:>6} "
        + " ".join(f"{medians[name]:>13.2f}" if name in medians else f"{'-':>13}" for name in names)
        + f" {times(row['ours_over_vendor'], 11)} {times(row['per_step_over_ours'], 13)}"
        + f" {times(row['per_step_over_vendor'], 15)}"
        + f" {times(row['reference_over_ours'], 8)}"
    )


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``"128x64x128,32x256x256"`` -> ``[(128, 64, 128), (32, 256, 256)]``."""
    shapes = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
            raise argparse.ArgumentTypeError(
                f"shape must be TxBxH with positive ints, got {item!r}"
            )
        shapes.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return shapes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="recurrl bench cells", description=plain_text(__doc__.split("\n\n")[0])
    )
    default_shapes = ",".join("x".join(map(str, shape)) for shape in SHAPES)
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=parse_shapes(default_shapes),
        help=f"comma-separated TxBxH (default {default_shapes})",
    )
    parser.add_argument(
        "--cells",
        default="lstm,gru",
        help="comma-separated: lstm, gru, rnn, mingru, transformer, tcn",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=7, help="timed passes per candidate"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed passes per candidate"
    )
    parser.add_argument("--reset-prob", type=float, default=0.02, help="episode-start rate")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    unknown = set(args.cells.split(",")) - set(CELLS)
    if unknown:
        parser.error(f"--cells: unknown {sorted(unknown)}; choose from {sorted(CELLS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON; returns the exit code."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available in this torch build or machine")
        return 2
    info = machine(device)
    print(
        f"# {info['cpu']} | {info['cores']} cores | torch {info['torch']} | "
        f"{info['threads']} threads | device {info['device']}"
        + (f" ({info['gpu']})" if info["gpu"] else "")
        + f" | native kernels: {info['native_kernels']}",
        flush=True,
    )
    names = candidate_names(device)
    cell_width = max(5, *(len(cell) for cell in args.cells.split(",")))
    print(table_header(names, cell_width), flush=True)
    rows = []
    for cell in args.cells.split(","):
        for shape in args.shapes:
            candidates = build_candidates(cell, shape, device, args.reset_prob)
            times = time_candidates(candidates, device, args.repeats, args.warmup)
            rows.append(summarize(cell, shape, auto_impl(cell, shape, device), times))
            print(table_row(rows[-1], names, cell_width), flush=True)
    if args.out:
        config = {key: value for key, value in vars(args).items() if key != "out"}
        with open(args.out, "w") as handle:
            json.dump({"machine": info, "config": config, "results": rows}, handle, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
