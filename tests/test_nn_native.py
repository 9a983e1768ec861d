"""Native (C) time loops against the reference: outputs, states and every gradient, with resets.

The kernels are built on first use with the machine's C compiler; where there is none these
tests skip, except the one that says a machine with a compiler must build them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from recurrl.nn import GRU, LSTM, native
from recurrl.nn.cores import resolve_impl
from recurrl.nn.native import build
from recurrl.nn.native import frozen as native_frozen

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.unavailable_reason()}"
)


def test_kernels_build_where_a_compiler_exists():
    if build.compiler() is None:
        pytest.skip("no C compiler on this machine")
    assert native.available(), native.unavailable_reason()


def make_pair(cls, input_size: int, hidden: int, num_layers: int):
    reference = cls(input_size, hidden, num_layers, impl="reference")
    fast = cls(input_size, hidden, num_layers, impl="native")
    fast.load_state_dict(reference.state_dict())
    return fast, reference


def flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def run(core, x, state, episode_start, weights):
    """Outputs, final state and gradients of a weighted loss w.r.t. x, state and parameters."""
    y, final = core(x, state, episode_start)
    outputs = [y, *flat(final)]
    loss = y.sum() + sum((out * w).sum() for out, w in zip(outputs, weights, strict=True))
    grads = torch.autograd.grad(loss, [x, *flat(state), *core.parameters()])
    return [out.detach() for out in outputs], list(grads)


def random_case(cls, input_size, hidden, num_layers, steps, batch, scale=1.0):
    x = (scale * torch.randn(steps, batch, input_size)).requires_grad_()
    parts = [
        torch.randn(num_layers, batch, hidden).requires_grad_() for _ in range(1 + (cls is LSTM))
    ]
    state = tuple(parts) if cls is LSTM else parts[0]
    episode_start = torch.rand(steps, batch) < 0.3
    episode_start[0, 0] = True
    if steps > 3 and batch > 1:
        episode_start[1:3, 1] = True  # consecutive resets
    return x, state, episode_start


@needs_native
@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize(
    "input_size, hidden, num_layers, steps, batch",
    [
        (3, 5, 1, 9, 4),  # scalar remainders only
        (7, 20, 2, 6, 9),  # one vector per gate block, odd batch
        (16, 64, 1, 5, 6),  # full register tiles plus a 2-row remainder (4-row tiles)
        (16, 72, 1, 4, 19),  # 8-row tiles (AVX-512) + 3 rows; backward K = 288 in two blocks
        (5, 37, 1, 1, 3),  # one step (acting), hidden not a multiple of any vector width
    ],
)
def test_native_equals_reference(cls, input_size, hidden, num_layers, steps, batch):
    torch.manual_seed(0)
    fast, reference = make_pair(cls, input_size, hidden, num_layers)
    x, state, episode_start = random_case(cls, input_size, hidden, num_layers, steps, batch)
    weights = [torch.randn(steps, batch, hidden)] + [torch.randn_like(p) for p in flat(state)]
    outputs, grads = run(fast, x, state, episode_start, weights)
    outputs_ref, grads_ref = run(reference, x, state, episode_start, weights)
    for got, want in zip(outputs, outputs_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4)
    for grad in grads[1 : 1 + len(flat(state))]:  # row 0 resets at t = 0: no gradient reaches it
        assert torch.all(grad[:, 0] == 0)


@needs_native
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_saturated_gates_stay_finite_and_exact(cls):
    """Pre-activations of +-100 (far past exp's float range) saturate like torch's."""
    torch.manual_seed(1)
    fast, reference = make_pair(cls, 4, 8, 1)
    x, state, episode_start = random_case(cls, 4, 8, 1, 6, 5, scale=100.0)
    weights = [torch.randn(6, 5, 8)] + [torch.randn_like(p) for p in flat(state)]
    outputs, grads = run(fast, x, state, episode_start, weights)
    outputs_ref, grads_ref = run(reference, x, state, episode_start, weights)
    assert all(torch.isfinite(t).all() for t in outputs + grads)
    for got, want in zip(outputs + grads, outputs_ref + grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_native
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_inference_mode_and_non_contiguous_inputs(cls):
    """Acting runs under inference_mode; strided views of x and the state are accepted."""
    torch.manual_seed(2)
    fast, reference = make_pair(cls, 6, 16, 1)
    x = torch.randn(7, 4, 6).transpose(0, 1)  # (T=4, B=7, I) view, not contiguous
    state_parts = [torch.randn(1, 16, 7).transpose(1, 2) for _ in range(1 + (cls is LSTM))]
    state = tuple(state_parts) if cls is LSTM else state_parts[0]
    episode_start = torch.rand(4, 7) < 0.3
    with torch.inference_mode():
        y, final = fast(x, state, episode_start)
        y_ref, final_ref = reference(x, state, episode_start)
    for got, want in zip([y, *flat(final)], [y_ref, *flat(final_ref)], strict=True):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@needs_native
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_only_final_state_in_the_loss(cls):
    """Autograd hands zeros for unused outputs; the kernels must treat them as such."""
    torch.manual_seed(3)
    fast, reference = make_pair(cls, 3, 6, 1)
    x, state, episode_start = random_case(cls, 3, 6, 1, 5, 3)
    grads = torch.autograd.grad(flat(fast(x, state, episode_start)[1])[-1].sum(), [x])
    grads_ref = torch.autograd.grad(flat(reference(x, state, episode_start)[1])[-1].sum(), [x])
    torch.testing.assert_close(grads[0], grads_ref[0], rtol=2e-5, atol=2e-5)


@needs_native
def test_auto_picks_native_for_small_float32_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_impl("auto", cpu, torch.float32, 8 * 128 * 512) == "native"
    assert resolve_impl("auto", cpu, torch.float64, 8 * 128 * 512) == "fused"


def test_native_refuses_what_it_cannot_run():
    core = LSTM(2, 3, impl="native").double()
    with pytest.raises(ValueError, match="impl='native' runs float32 on CPU"):
        core(torch.randn(4, 2, 2, dtype=torch.float64))


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_disabled_by_environment_falls_back_to_fused():
    out = run_python(
        "import torch; from recurrl.nn import native; from recurrl.nn.cores import resolve_impl;"
        "print(native.available(), native.unavailable_reason());"
        "print(resolve_impl('auto', torch.device('cpu'), torch.float32, 1))",
        RECURRL_NATIVE="0",
    )
    assert out.split("\n")[:2] == ["False disabled by RECURRL_NATIVE=0", "fused"]


def test_without_a_compiler_the_reason_is_given_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(build, "_library", None)
    monkeypatch.setattr(build, "_reason", None)
    monkeypatch.setattr(build, "compiler", lambda: None)
    assert not native.available()
    assert "no C compiler" in native.unavailable_reason()
    assert resolve_impl("auto", torch.device("cpu"), torch.float32, 1) == "fused"
    torch.manual_seed(4)
    core = GRU(3, 4)  # auto: runs the fused path
    y, _ = core(torch.randn(5, 2, 3), None, torch.zeros(5, 2))
    assert y.shape == (5, 2, 4)


@needs_native
def test_build_is_cached_by_source_flags_and_isa(tmp_path):
    code = "from recurrl.nn.native import build; print(build.build('portable'))"
    first = run_python(code, RECURRL_CACHE_DIR=str(tmp_path)).strip()
    assert first.startswith(str(tmp_path)) and os.path.exists(first)
    assert "_portable_" in os.path.basename(first)
    stamp = os.stat(first).st_mtime_ns
    second = run_python(code, RECURRL_CACHE_DIR=str(tmp_path)).strip()
    assert second == first and os.stat(first).st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(first)]  # no temp files
    assert os.stat(first).st_mode & 0o077 == 0  # private to this user
    command = build.compiler()
    names = {variant: build.library_name(command, variant) for variant in build.VARIANTS}
    assert len(set(names.values())) == len(names)  # the ISA level is part of the key


def test_no_native_march_and_the_cpu_picks_the_variant(monkeypatch):
    """Fixed ISA levels chosen at run time, never -march=native (a shared cache would hand a
    CPU instructions it lacks); RECURRL_NATIVE_ISA may lower the level but not raise it."""
    assert not any("native" in flag for flags in build.VARIANTS.values() for flag in flags)
    assert "native" not in " ".join(build.BASE_FLAGS)
    monkeypatch.setattr(build, "cpu_variant", lambda: "avx2")
    monkeypatch.delenv("RECURRL_NATIVE_ISA", raising=False)
    assert build.wanted_variant() == ("avx2", None)
    monkeypatch.setenv("RECURRL_NATIVE_ISA", "portable")
    assert build.wanted_variant() == ("portable", None)
    monkeypatch.setenv("RECURRL_NATIVE_ISA", "avx512")
    variant, why = build.wanted_variant()
    assert variant is None and "at most avx2" in why
    monkeypatch.setenv("RECURRL_NATIVE_ISA", "sse9")
    assert build.wanted_variant()[0] is None


@needs_native
@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_portable_variant_builds_and_equals_reference(cls):
    """The build without SIMD extensions beyond the machine's baseline (what a CPU without
    AVX2 gets) computes the same as the reference, forward and backward."""
    code = f"""
import torch
from recurrl.nn import {cls} as Core, native
assert native.loaded_variant() == "portable", native.unavailable_reason()
torch.manual_seed(0)
reference = Core(5, 37, 2, impl="reference")
fast = Core(5, 37, 2, impl="native")
fast.load_state_dict(reference.state_dict())
x = torch.randn(6, 19, 5, requires_grad=True)
episode_start = torch.rand(6, 19) < 0.3
grads = []
for core in (fast, reference):
    y, _ = core(x, None, episode_start)
    grads.append(torch.autograd.grad((y * y).sum(), [x, *core.parameters()]) + (y,))
for got, want in zip(*grads):
    torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4)
print("ok")
"""
    assert run_python(code, RECURRL_NATIVE_ISA="portable").strip() == "ok"


@needs_native
def test_wrong_tensors_raise_before_reaching_the_kernel():
    """dtype, device, contiguity and shape are checked in one place before any pointer passes."""
    good = torch.zeros(2, 3)
    for bad, what in [
        (torch.zeros(2, 3, dtype=torch.float64), "float64"),
        (torch.zeros(3, 2).t(), "contiguous=False"),
        (torch.zeros(2, 2), "shape \\[2, 2\\]"),
    ]:
        with pytest.raises(ValueError, match=what):
            build.call(
                "recurrl_gru_backward", (1, 1, 1), (("dh", good, (2, 3)), ("x", bad, (2, 3)))
            )
    core = LSTM(3, 4, impl="native")
    with pytest.raises(ValueError, match="state must be"):  # the core's own shape check first
        core(torch.randn(2, 5, 3), (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)))


def test_compiler_errors_are_kept_in_the_reason(tmp_path, monkeypatch):
    broken = tmp_path / "kernels.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    monkeypatch.setenv("RECURRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_library", None)
    monkeypatch.setattr(build, "_reason", None)
    if build.compiler() is None:
        pytest.skip("no C compiler on this machine")
    assert build.library() is None
    reason = build.unavailable_reason()
    assert "could not compile" in reason and "error" in reason  # the compiler's own words


@needs_native
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_weights_changed_in_place_are_seen(cls):
    """Nothing derived from the weights outlives a call (fused optimizers do not bump versions)."""
    torch.manual_seed(5)
    fast, reference = make_pair(cls, 3, 8, 1)
    x, episode_start = torch.randn(4, 2, 3), torch.zeros(4, 2)
    with torch.inference_mode():
        fast(x, None, episode_start)
    for core in (fast, reference):  # as an optimizer step would
        optimizer = torch.optim.Adam(core.parameters(), lr=0.1, fused=True)
        for parameter in core.parameters():
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
    with torch.inference_mode():
        y, _ = fast(x, None, episode_start)
        y_ref, _ = reference(x, None, episode_start)
    torch.testing.assert_close(y, y_ref, rtol=2e-5, atol=2e-5)
    with torch.inference_mode():  # a module built in inference mode: no version counter
        inference_core = cls(3, 8, impl="native")
        inference_core.load_state_dict(reference.state_dict())
        y_inference, _ = inference_core(x, None, episode_start)
    torch.testing.assert_close(y_inference, y_ref, rtol=2e-5, atol=2e-5)


@needs_native
def test_frozen_weights_block_transposes_once_and_forgets_on_exit():
    torch.manual_seed(6)
    fast, reference = make_pair(LSTM, 3, 8, 1)
    x, episode_start = torch.randn(2, 4, 3), torch.zeros(2, 4)
    with torch.inference_mode(), native.frozen_weights():
        first, _ = fast(x, None, episode_start)
        with native.frozen_weights():  # nested: shares the outer cache
            second, _ = fast(x, None, episode_start)
        assert len(native_frozen._frozen) == 2  # W_hh^T, b_ih + b_hh
    assert native_frozen._frozen is None
    with torch.no_grad():
        for core in (fast, reference):
            core.weight_hh_l0.mul_(-1.0)
            core.bias_hh_l0.add_(0.5)
        y, _ = fast(x, None, episode_start)
        y_ref, _ = reference(x, None, episode_start)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(y, y_ref, rtol=2e-5, atol=2e-5)


def test_unwritable_cache_falls_back_to_a_private_temp_dir(tmp_path):
    if build.compiler() is None:
        pytest.skip("no C compiler on this machine")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    code = "from recurrl.nn.native import build; print(build.build('portable'))"
    path = run_python(code, RECURRL_CACHE_DIR=str(blocked / "cache")).strip()
    assert path != "None" and not path.startswith(str(blocked)) and os.path.exists(path)
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700


def test_a_cache_others_can_write_to_is_never_loaded_from(tmp_path):
    """A world-writable cache (or a library in it) could be swapped for anyone's code."""
    if build.compiler() is None:
        pytest.skip("no C compiler on this machine")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    code = "from recurrl.nn.native import build; print(build.build('portable'))"
    path = run_python(code, RECURRL_CACHE_DIR=str(shared)).strip()
    assert path != "None" and not path.startswith(str(shared))
    os.chmod(shared, 0o700)
    planted = shared / build.library_name(build.compiler(), "portable")
    planted.write_bytes(b"not a library")
    os.chmod(planted, 0o666)
    path = run_python(code, RECURRL_CACHE_DIR=str(shared)).strip()
    assert path != "None" and path != str(planted)
