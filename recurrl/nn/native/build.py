"""Compile ``kernels.c`` with the machine's C compiler once, cache the library, load it.

The library is built on first use for the CPU it runs on (``-march=native``; plain ``-O3`` if the
compiler refuses that) into ``$RECURRL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/recurrl`` or
``~/.cache/recurrl``), named by a hash of the source, the flags and the compiler, so a changed
source or compiler builds anew and processes share one build (written to a temporary name, then
renamed into place). Building takes well under a second with gcc.

Without a C compiler, or with ``RECURRL_NATIVE=0``, :func:`library` returns ``None`` and the cores
use the pure-PyTorch ``fused`` implementation; :func:`unavailable_reason` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels.c")
# -fno-trapping-math (as torch is built): without AVX-512's masked operations GCC vectorises the
# loops with selects (the clamps in exp_f and tanh_accurate_f) only if it may assume no FP traps
# (measured, AVX2 build on AMD EPYC Zen 5: LSTM 128 -> 128, T = B = 16, forward and backward,
# 2473 -> 1864 us).
BASE_FLAGS = ["-O3", "-std=gnu99", "-fno-trapping-math", "-fPIC", "-shared"]
ARCH_FLAGS = (["-march=native"], [])  # tried in order
SIGNATURES = {  # name: (int arguments, pointer arguments after them)
    "recurrl_lstm_forward": (4, 8),
    "recurrl_lstm_backward": (3, 10),
    "recurrl_gru_forward": (4, 8),
    "recurrl_gru_backward": (3, 10),
    "recurrl_tanh": (1, 2),
    "recurrl_transpose": (2, 2),
    "recurrl_linear_forward": (4, 4),
    "recurrl_linear_backward": (4, 9),
    "recurrl_program": (1, 2),
}
INT_RESULTS = {"recurrl_tanh_is_fast": 0}  # name: int arguments, for functions returning an int

_library: ctypes.CDLL | None = None
_reason: str | None = None  # why the library is unavailable, once known


def compiler() -> list[str] | None:
    """The C compiler command: ``$CC``, else Python's own, else ``cc``/``gcc``/``clang``."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if candidate:
            command = shlex.split(candidate)
            if command and shutil.which(command[0]):
                return command
    return None


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    if os.environ.get("RECURRL_CACHE_DIR"):
        return Path(os.environ["RECURRL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recurrl"


def _compile(command: list[str], flags: list[str], directory: Path) -> Path | None:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        source + " ".join(command + flags).encode() + platform.machine().encode()
    ).hexdigest()[:16]
    target = directory / f"recurrl_native_{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        result = subprocess.run(
            [*command, *BASE_FLAGS, *flags, str(SOURCE), "-o", temporary],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            return None
        os.replace(temporary, target)  # atomic: concurrent builders agree on the result
        return target
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def build() -> Path | None:
    """Path of the built library (building it if needed), or ``None`` (see the reason)."""
    global _reason
    command = compiler()
    if command is None:
        _reason = "no C compiler found (set CC, or install gcc or clang)"
        return None
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    directories = [cache_dir(), Path(tempfile.gettempdir()) / f"recurrl-{user}"]
    for directory in directories:
        for flags in ARCH_FLAGS:
            try:
                path = _compile(command, flags, directory)
            except (OSError, subprocess.SubprocessError) as error:
                _reason = f"building {SOURCE.name} in {directory} failed: {error}"
                break  # this directory is unusable; try the next
            if path is not None:
                return path
            _reason = f"{command[0]} could not compile {SOURCE}"
    return None


def library() -> ctypes.CDLL | None:
    """The loaded kernels (built on first call), or ``None`` where they cannot be had."""
    global _library, _reason
    if _library is not None or _reason is not None:
        return _library
    if os.environ.get("RECURRL_NATIVE", "1") == "0":
        _reason = "disabled by RECURRL_NATIVE=0"
        return None
    path = build()
    if path is None:
        return None
    try:
        loaded = ctypes.CDLL(str(path))
        for name, (ints, pointers) in SIGNATURES.items():
            function = getattr(loaded, name)
            function.argtypes = [ctypes.c_int] * ints + [ctypes.c_void_p] * pointers
            function.restype = None
        for name, ints in INT_RESULTS.items():
            function = getattr(loaded, name)
            function.argtypes = [ctypes.c_int] * ints
            function.restype = ctypes.c_int
    except (OSError, AttributeError) as error:
        _reason = f"loading {path} failed: {error}"
        return None
    _library = loaded
    return _library


def available() -> bool:
    """Whether the native kernels can be used on this machine."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (``None`` when it is True or was not asked yet)."""
    library()
    return _reason if _library is None else None
