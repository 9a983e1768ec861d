"""Whether the Triton kernels can run, without importing triton (cheap; used by ``auto``)."""

from __future__ import annotations

import importlib.util
import os

import torch

DTYPES = (torch.float32, torch.float64)
"""The dtypes the kernels run (``tl.dot`` in tf32/ieee for float32, ieee for float64)."""
MIN_CAPABILITY = (8, 0)
"""Oldest CUDA compute capability the kernels are offered on (Ampere: tf32 tensor cores)."""


def installed() -> bool:
    """Whether ``triton`` can be imported (looked up, not imported)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set now: triton then runs kernels on the CPU, in numpy
    (how the tests run them without a GPU; far too slow for anything else)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def unavailable_reason(device: torch.device | str = "cuda") -> str | None:
    """Why the kernels cannot run on ``device``, or ``None`` if they can."""
    device = torch.device(device)
    if not installed():
        return "triton is not installed (pip install triton, Linux x86_64)"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        if major < MIN_CAPABILITY[0]:
            return f"compute capability {major}.{minor} < {MIN_CAPABILITY[0]}.0 (no tf32 tl.dot)"
        return None
    if device.type == "cpu" and interpreting():
        return None
    return (
        f"the Triton kernels run on CUDA devices, got {device.type} (CPU tensors only under "
        "TRITON_INTERPRET=1, triton's interpreter, for tests)"
    )


def available(device: torch.device | str = "cuda") -> bool:
    """Whether triton is importable and ``device`` is CUDA (or CPU with ``TRITON_INTERPRET=1``)."""
    return unavailable_reason(device) is None
