"""Compile ``kernels.c`` once per instruction set, cache the library, check and make every call.

**Instruction sets.** The source is compiled for one of a few fixed ISA levels
(:data:`VARIANTS`: ``avx512``, ``avx2``, ``portable``), never ``-march=native``; which one runs
is decided at run time from the CPU (:func:`torch.backends.cpu.get_cpu_capability`), lowered by
``RECURRL_NATIVE_ISA`` if set. The cache key holds the level's flags, so a cache shared by
machines with different CPUs never hands one a library built for instructions it lacks (which
would die with SIGILL, past any Python fallback).

**Where.** Libraries live in ``$RECURRL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/recurrl`` or
``~/.cache/recurrl``), named by a hash of the source, the compiler and its version, the flags and
the machine; a build is written to a temporary name and renamed into place. A directory or
library that is not owned by this user, or that others can write to, is never loaded from: the
build then goes to a fresh private temporary directory (``mkdtemp``, mode 0700) instead.

**Calls.** :func:`call` is the one way into the library: it checks every tensor's dtype
(float32), device (CPU), contiguity and shape against what the kernel will read or write, and
raises :class:`ValueError` before a pointer crosses ``ctypes``.

Without a C compiler, or with ``RECURRL_NATIVE=0``, :func:`library` returns ``None`` and the cores
use the pure-PyTorch ``fused`` implementation; :func:`unavailable_reason` says why (with the
compiler's own message when a build failed).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("kernels.c")
# -fno-trapping-math (as torch is built): without AVX-512's masked operations GCC vectorises the
# loops with selects (the clamps in exp_f) only if it may assume no FP traps (measured, AVX2 build
# on AMD EPYC Zen 5: LSTM 128 -> 128, T = B = 16, forward and backward, 2473 -> 1864 us).
BASE_FLAGS = ["-O3", "-std=gnu99", "-fno-trapping-math", "-fPIC", "-shared"]
VARIANTS = {  # ISA level: flags; lowest first
    "portable": [],
    "avx2": ["-mavx", "-mavx2", "-mfma"],
    "avx512": ["-mavx", "-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl"],
}
"""Compiler flags per ISA level. ``portable`` is the compiler's default target for the machine
(SSE2 on x86-64, NEON on arm64); the others exist on x86-64 only and match torch's own
``AVX2`` / ``AVX512`` capability levels."""
SIGNATURES = {  # name: (int arguments, pointer arguments after them)
    "recurrl_lstm_forward": (4, 8),
    "recurrl_lstm_backward": (3, 10),
    "recurrl_gru_forward": (4, 8),
    "recurrl_gru_backward": (3, 10),
}

_library: ctypes.CDLL | None = None
_variant: str | None = None
_reason: str | None = None  # why the library is unavailable, once known
_private_dir: Path | None = None


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


def cpu_variant() -> str:
    """The highest :data:`VARIANTS` level this CPU runs (torch's own CPU capability check)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "portable"
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(capability, "portable")


def wanted_variant() -> tuple[str | None, str | None]:
    """``(variant, None)`` to build and load, or ``(None, why not)``.

    ``RECURRL_NATIVE_ISA`` (``portable``, ``avx2``, ``avx512``) picks a level at most as high as
    the CPU's; a higher one is refused rather than loaded into a SIGILL.
    """
    best = cpu_variant()
    asked = os.environ.get("RECURRL_NATIVE_ISA", "").strip().lower()
    if not asked or asked == "auto":
        return best, None
    levels = list(VARIANTS)
    if asked not in VARIANTS:
        return None, f"RECURRL_NATIVE_ISA={asked!r} is not one of auto, {', '.join(levels)}"
    if levels.index(asked) > levels.index(best):
        return None, f"RECURRL_NATIVE_ISA={asked}: this CPU runs at most {best}"
    return asked, None


def _compiler_version(command: list[str]) -> str:
    try:
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout


def _owned_and_private(path: Path) -> bool:
    """Whether ``path`` belongs to this user and no one else may write to it."""
    if not hasattr(os, "getuid"):
        return True  # no POSIX owners (Windows): the user profile's own ACLs apply
    info = os.stat(path, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        return False
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _usable_dir(directory: Path) -> bool:
    """Create ``directory`` (mode 0700) if missing; whether it is safe to load libraries from."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return _owned_and_private(directory)


def private_temp_dir() -> Path:
    """This process's own build directory (``mkdtemp``: unpredictable name, mode 0700)."""
    global _private_dir
    if _private_dir is None:
        _private_dir = Path(tempfile.mkdtemp(prefix="recurrl-native-"))
    return _private_dir


def library_name(command: list[str], variant: str) -> str:
    """File name of the library: a hash of source, compiler (and version), flags and machine."""
    key = b"\0".join(
        [
            SOURCE.read_bytes(),
            " ".join(command).encode(),
            _compiler_version(command).encode(),
            " ".join(BASE_FLAGS + VARIANTS[variant]).encode(),
            platform.machine().encode(),
        ]
    )
    return f"recurrl_native_{variant}_{hashlib.sha256(key).hexdigest()[:16]}.so"


def _compile(command: list[str], variant: str, directory: Path) -> tuple[Path | None, str]:
    """``(library path, "")``, or ``(None, the compiler's message)``."""
    target = directory / library_name(command, variant)
    if target.exists():
        if _owned_and_private(target):
            return target, ""
        return None, f"{target} is not owned by this user or is writable by others"
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        result = subprocess.run(
            [*command, *BASE_FLAGS, *VARIANTS[variant], str(SOURCE), "-o", temporary],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            return None, (result.stderr or result.stdout).strip()[-2000:]
        os.chmod(temporary, 0o700)
        os.replace(temporary, target)  # atomic: concurrent builders agree on the result
        return target, ""
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def build(variant: str) -> Path | None:
    """Path of the library for ``variant`` (building it if needed), or ``None`` (see the
    reason): in the cache directory if that is safe, else in a private temporary one."""
    global _reason
    command = compiler()
    if command is None:
        _reason = "no C compiler found (set CC, or install gcc or clang)"
        return None
    problems = []
    for directory in (cache_dir(), None):
        try:
            if directory is None:
                directory = private_temp_dir()
            elif not _usable_dir(directory):
                problems.append(f"{directory} is not owned by this user or is writable by others")
                continue
            path, message = _compile(command, variant, directory)
        except (OSError, subprocess.SubprocessError) as error:
            problems.append(f"building in {directory} failed: {error}")
            continue
        if path is not None:
            return path
        problems.append(f"{command[0]} could not compile {SOURCE.name} for {variant}: {message}")
        if not message.endswith("writable by others"):
            break  # the compiler refused: another directory will not change its mind
    _reason = "; ".join(problems)
    return None


def library() -> ctypes.CDLL | None:
    """The loaded kernels (built on first call), or ``None`` where they cannot be had."""
    global _library, _reason, _variant
    if _library is not None or _reason is not None:
        return _library
    if os.environ.get("RECURRL_NATIVE", "1") == "0":
        _reason = "disabled by RECURRL_NATIVE=0"
        return None
    variant, why = wanted_variant()
    if variant is None:
        _reason = why
        return None
    path, reasons = None, []
    for candidate in dict.fromkeys([variant, "portable"]):  # a compiler without AVX-512, say
        path = build(candidate)
        if path is not None:
            variant, _reason = candidate, None
            break
        reasons.append(_reason)
    if path is None:
        _reason = "; ".join(reasons)
        return None
    try:
        loaded = ctypes.CDLL(str(path))
        for name, (ints, pointers) in SIGNATURES.items():
            function = getattr(loaded, name)
            function.argtypes = [ctypes.c_int] * ints + [ctypes.c_void_p] * pointers
            function.restype = None
    except (OSError, AttributeError) as error:
        _reason = f"loading {path} failed: {error}"
        return None
    _library, _variant = loaded, variant
    return _library


def available() -> bool:
    """Whether the native kernels can be used on this machine."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (``None`` when it is True)."""
    library()
    return _reason if _library is None else None


def loaded_variant() -> str | None:
    """The :data:`VARIANTS` level of the loaded library (``None`` if none is loaded)."""
    library()
    return _variant


def call(name: str, ints: tuple[int, ...], arrays: tuple[tuple[str, Tensor, tuple], ...]) -> None:
    """Run kernel ``name`` on ``ints`` and the ``(argument, tensor, shape)`` ``arrays``.

    Every tensor must be float32, on the CPU, contiguous and of exactly the shape the kernel
    reads or writes, or this raises :class:`ValueError` naming the argument; only then do the
    pointers cross ``ctypes``. The caller holds the tensors until this returns.
    """
    for argument, tensor, shape in arrays:
        if (
            tensor.dtype != torch.float32
            or not tensor.is_cpu
            or not tensor.is_contiguous()
            or tensor.shape != shape
        ):
            raise ValueError(
                f"{name}: {argument} must be a contiguous float32 CPU tensor of shape "
                f"{list(shape)}, got {tensor.dtype} on {tensor.device}, shape "
                f"{list(tensor.shape)}, contiguous={tensor.is_contiguous()}"
            )
    getattr(library(), name)(*ints, *(tensor.data_ptr() for _, tensor, _ in arrays))
