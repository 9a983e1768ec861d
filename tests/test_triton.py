"""``impl="triton"`` (recurrl/nn/triton_kernels) against the reference: outputs, states, gradients.

On CPU the kernels run in triton's interpreter: the ``interpreter`` fixture sets
``TRITON_INTERPRET=1`` with ``monkeypatch`` for each such test only. That is enough because the
kernels are decorated with ``triton.jit`` when a layer runs, once per mode
(``kernels.compiled``), not when triton or our module is imported: nothing leaks into other
tests, and importing triton here first changes nothing for them. The CUDA tests (skipped
without a GPU) clear the variable, so they run the compiled kernels; on a GPU machine::

    python -m pytest -q tests/test_triton.py -k cuda

The module is skipped where triton is not installed (it is in the ``dev`` extra on Linux x86_64).
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

from recurrl.nn import GRU, LSTM, cores, triton_kernels  # noqa: E402
from recurrl.nn.cores import resolve_impl  # noqa: E402
from recurrl.nn.triton_kernels import kernels, layers  # noqa: E402
from tests.test_nn_fast import (  # noqa: E402
    assert_all_close,
    flat,
    make_pair,
    outputs_and_grads,
    random_inputs,
)

TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


INTERPRETER_RUNS_THE_KERNELS = tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 9)
"""triton 3.6's interpreter failed on these kernels ("only 0-dimensional arrays can be converted
to Python scalars", docs/bench/gpu/parity.txt) where 3.9's runs them; the compiled kernels passed
on an H200 with 3.6."""


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's CPU interpreter for this test only."""
    if not INTERPRETER_RUNS_THE_KERNELS:
        pytest.skip(f"triton {triton.__version__}'s interpreter: these tests need >= 3.9")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def compiled_kernels(monkeypatch):
    """The real compiled kernels, whatever the environment says."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def compare(cls, sizes, steps, batch, dtype, device="cpu", other="reference", tol=None, seed=0):
    """Outputs, final states and every gradient of ``impl="triton"`` against ``other``."""
    torch.manual_seed(seed)
    fast, slow = make_pair(cls, sizes, dtype, device, impl="triton")
    slow.impl = other
    x, state, episode_start = random_inputs(cls, sizes, steps, batch, dtype, device)
    y_shape = (steps, batch, sizes[1])
    weights = [torch.randn(y_shape, dtype=dtype, device=device)]
    weights += [torch.randn_like(part) for part in flat(state)]
    outputs, grads = outputs_and_grads(fast, x, state, episode_start, weights)
    outputs_ref, grads_ref = outputs_and_grads(slow, x, state, episode_start, weights)
    tol = TOLERANCE[dtype] if tol is None else tol
    assert_all_close(outputs, outputs_ref, tol)
    assert_all_close(grads, grads_ref, 10 * tol)
    if episode_start[0, 0]:  # reset at t = 0: no gradient reaches row 0's initial state
        for grad in grads[1 : 1 + len(flat(state))]:
            assert torch.all(grad[:, 0] == 0)
    return outputs, grads


# (input size, H, layers), T, B: small, H not a power of 2 over two column tiles, B over two
# blocks of rows, T = 1.
SHAPES = [((3, 5, 1), 9, 4), ((4, 70, 1), 4, 17), ((2, 7, 1), 1, 3)]


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize(("sizes", "steps", "batch"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_equals_reference(cls, sizes, steps, batch, dtype):
    compare(cls, sizes, steps, batch, dtype)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_multi_layer_equals_reference(cls):
    compare(cls, (3, 6, 3), 7, 5, torch.float64)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_wide_row_blocks(cls, monkeypatch):
    """32 rows per program (what a batch larger than the GPU's SMs times 16 gets)."""
    monkeypatch.setattr(layers, "block_rows", lambda batch, device: layers.WIDE_BLOCK_B)
    assert layers.launch_config(5, 40, torch.float32, torch.device("cpu"))["grid"] == (2,)
    compare(cls, (3, 5, 1), 5, 40, torch.float64)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_unused_outputs_get_zero_gradient(cls):
    """Only ``y`` or only the final state in the loss: autograd hands the Function zeros."""
    torch.manual_seed(1)
    fast, reference = make_pair(cls, (2, 3, 1), torch.float64, impl="triton")
    x, state, episode_start = random_inputs(cls, (2, 3, 1), 5, 3, torch.float64)
    for pick in (lambda y, final: y.pow(2).sum(), lambda y, final: flat(final)[-1].sum()):
        grads = torch.autograd.grad(pick(*fast(x, state, episode_start)), [x, *flat(state)])
        grads_ref = torch.autograd.grad(
            pick(*reference(x, state, episode_start)), [x, *flat(state)]
        )
        assert_all_close(grads, grads_ref, 1e-10)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_acting_without_autograd(cls):
    """``step`` under ``inference_mode`` (no Function, no saved tensors) and frozen weights."""
    torch.manual_seed(2)
    fast, reference = make_pair(cls, (6, 16, 2), torch.float32, impl="triton")
    x, state, episode_start = random_inputs(cls, (6, 16, 2), 1, 20, torch.float32)
    with torch.inference_mode():
        y, final = fast.step(x[0], state, episode_start[0])
        y_ref, final_ref = reference.step(x[0], state, episode_start[0])
    assert_all_close([y, *flat(final)], [y_ref, *flat(final_ref)], 1e-5)
    fast.requires_grad_(False)
    y, _ = fast(x.detach(), None, episode_start)
    assert not y.requires_grad
    torch.testing.assert_close(y, reference(x, None, episode_start)[0].detach())


def test_refused_on_cpu_without_the_interpreter(compiled_kernels):
    core = LSTM(2, 3, impl="triton")
    with pytest.raises(ValueError, match="impl='triton' runs float32 on CUDA"):
        core(torch.randn(4, 2, 2))
    assert not triton_kernels.available("cpu")


def test_refused_for_other_dtypes(interpreter):
    core = GRU(2, 3, impl="triton").to(torch.bfloat16)
    with pytest.raises(ValueError, match="impl='triton'"):
        core(torch.randn(4, 2, 2, dtype=torch.bfloat16))


def test_auto_selection(monkeypatch, interpreter):
    """auto: triton on CUDA for float32 where available, never on CPU (not even interpreted)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert triton_kernels.available(cpu)  # the interpreter runs CPU tensors, for tests
    assert resolve_impl("auto", cpu, torch.float32, 1 << 30) == "fused"
    monkeypatch.setattr(triton_kernels, "available", lambda device="cuda": True)
    assert resolve_impl("auto", cuda, torch.float32) == "triton"
    assert resolve_impl("auto", cuda, torch.float64) == "fused"
    assert resolve_impl("auto", cuda, torch.float16) == "fused"
    monkeypatch.setattr(triton_kernels, "available", lambda device="cuda": False)
    assert resolve_impl("auto", cuda, torch.float32) == "fused"
    assert cores.LSTM_LAYERS["triton"] is triton_kernels.lstm_layer
    assert cores.GRU_LAYERS["triton"] is triton_kernels.gru_layer


def test_precision_follows_cudnn_allow_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert layers.launch_config(8, 4, torch.float32, torch.device("cpu"))["PRECISION"] == "tf32"
    assert layers.launch_config(8, 4, torch.float64, torch.device("cpu"))["PRECISION"] == "ieee"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert layers.launch_config(8, 4, torch.float32, torch.device("cpu"))["PRECISION"] == "ieee"
    config = layers.launch_config(300, 33, torch.float32, torch.device("cpu"))
    assert (config["grid"], config["BLOCK_N"], config["BLOCK_B"]) == ((3,), 32, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_compile_for_hopper_without_a_gpu(dtype, compiled_kernels):
    """Each kernel through triton's whole compiler and ptxas for sm_90 (the H200), ahead of
    time: catches what the interpreter cannot (unsupported ops, shared memory over the limit)."""
    if torch.cuda.is_available():
        pytest.skip("the CUDA tests below compile and run the kernels on this machine's GPU")
    compiler = pytest.importorskip("triton.compiler")
    target = pytest.importorskip("triton.backends.compiler").GPUTarget("cuda", 90, 32)
    config = layers.launch_config(200, 64, dtype, torch.device("cpu"))
    config.pop("grid")
    options = {"num_warps": config.pop("num_warps"), "num_stages": config.pop("num_stages")}
    pointer = "*fp32" if dtype == torch.float32 else "*fp64"
    for name, function in kernels.KERNELS.items():
        names = inspect.signature(function).parameters
        signature = {
            arg: "constexpr" if arg in config else pointer if arg.endswith("_ptr") else "i32"
            for arg in names
        }
        source = compiler.ASTSource(triton.jit(function), signature, config)
        try:
            kernel = triton.compile(source, target=target, options=options)
        except RuntimeError as error:
            if "ptxas" in str(error).lower() and "not found" in str(error).lower():
                pytest.skip(f"no ptxas: {error}")
            raise
        assert kernel.metadata.shared < 96 * 1024, (name, kernel.metadata.shared)


def test_importing_recurrl_nn_does_not_import_triton():
    code = "import sys, recurrl.nn; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# On a GPU: the compiled kernels.


@needs_cuda
def test_cuda_auto_is_triton(compiled_kernels):
    assert resolve_impl("auto", torch.device("cuda"), torch.float32) == "triton"
    core = LSTM(3, 8).cuda()
    assert core._implementation(torch.empty(2, 4, 3, device="cuda")) == "triton"


@needs_cuda
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_cuda_triton_equals_fused(cls, compiled_kernels, monkeypatch):
    """float32 with ieee products, a shape over several column tiles and row blocks, 2 layers."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    compare(cls, (24, 200, 2), 48, 100, torch.float32, "cuda", other="fused", tol=1e-4)


@needs_cuda
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_cuda_float64_refused_and_tf32(cls, compiled_kernels, monkeypatch):
    """float64 is refused on CUDA (its tl.dot failed to compile with triton 3.6 on an H200);
    float32 in tf32 (torch's default) against fused, loosely."""
    module = cls(5, 7, impl="triton").to(device="cuda", dtype=torch.float64)
    with pytest.raises(ValueError, match="float64 in its CPU interpreter only"):
        module(torch.zeros(3, 2, 5, dtype=torch.float64, device="cuda"))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    compare(cls, (16, 64, 1), 32, 64, torch.float32, "cuda", other="fused", tol=2e-2)


@needs_cuda
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_cuda_wide_batch(cls, compiled_kernels, monkeypatch):
    """More rows than 16 per SM: 32-row programs (acting on thousands of envs)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    batch = 16 * sms + 5
    assert layers.launch_config(32, batch, torch.float32, torch.device("cuda"))["BLOCK_B"] == 32
    compare(cls, (8, 32, 1), 6, batch, torch.float32, "cuda", other="fused", tol=1e-4)
