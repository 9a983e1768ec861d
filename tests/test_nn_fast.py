"""Fast recurrent paths against the reference: outputs, states and every gradient, with resets."""

from __future__ import annotations

import pytest
import torch

from recurrl.nn import GRU, LSTM, fused, matmul, triton_kernels
from recurrl.nn.cores import resolve_impl
from recurrl.nn.fused import common as fused_common

TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}


@pytest.fixture(params=[1, 1 << 16])
def block_elements(request, monkeypatch):
    """Backward coefficients one step at a time, or the whole (small) sequence at once."""
    monkeypatch.setattr(fused_common, "BLOCK_ELEMENTS", request.param)
    return request.param


def make_pair(cls, sizes: tuple[int, int, int], dtype, device="cpu", impl="fused"):
    """A fast (``impl``) and a reference core with the same weights."""
    input_size, hidden, num_layers = sizes
    reference = cls(input_size, hidden, num_layers, impl="reference").to(device, dtype)
    fast = cls(input_size, hidden, num_layers, impl=impl).to(device, dtype)
    fast.load_state_dict(reference.state_dict())
    return fast, reference


def flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def random_inputs(cls, sizes, steps: int, batch: int, dtype, device="cpu"):
    """``x``, a non-zero initial state (leaves requiring grad) and episode starts with resets."""
    input_size, hidden, num_layers = sizes
    x = torch.randn(steps, batch, input_size, dtype=dtype, device=device, requires_grad=True)
    parts = [
        torch.randn(num_layers, batch, hidden, dtype=dtype, device=device, requires_grad=True)
        for _ in range(2 if cls is LSTM else 1)
    ]
    state = tuple(parts) if cls is LSTM else parts[0]
    episode_start = torch.rand(steps, batch, device=device) < 0.3
    episode_start[0, 0] = True  # reset at t = 0: no gradient to that row's initial state
    if steps > 3 and batch > 1:
        episode_start[1:3, 1] = True  # consecutive resets
    return x, state, episode_start


def outputs_and_grads(core, x, state, episode_start, weights):
    """Outputs, final state, and gradients of a weighted loss w.r.t. x, state and parameters."""
    y, final = core(x, state, episode_start)
    outputs = [y, *flat(final)]
    # y.sum() adds an expanded (stride-0) gradient, as a plain .sum() loss produces.
    loss = y.sum() + sum((out * weight).sum() for out, weight in zip(outputs, weights, strict=True))
    grads = torch.autograd.grad(loss, [x, *flat(state), *core.parameters()])
    return [out.detach() for out in outputs], list(grads)


def assert_all_close(actual: list, expected: list, tol: float) -> None:
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_equals_reference(cls, num_layers, dtype, block_elements):
    torch.manual_seed(0)
    sizes = (3, 5, num_layers)
    fast, reference = make_pair(cls, sizes, dtype)
    x, state, episode_start = random_inputs(cls, sizes, 9, 4, dtype)
    y_shape = (9, 4, 5)
    weights = [torch.randn(y_shape, dtype=dtype)]
    weights += [torch.randn(part.shape, dtype=dtype) for part in flat(state)]
    outputs, grads = outputs_and_grads(fast, x, state, episode_start, weights)
    outputs_ref, grads_ref = outputs_and_grads(reference, x, state, episode_start, weights)
    tol = TOLERANCE[dtype]
    assert_all_close(outputs, outputs_ref, tol)
    assert_all_close(grads, grads_ref, 10 * tol)
    for grad in grads[1 : 1 + len(flat(state))]:  # reset at t = 0 for row 0
        assert torch.all(grad[:, 0] == 0)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_unused_outputs_get_zero_gradient(cls):
    """Only ``y`` or only the final state in the loss: autograd hands the Function zeros."""
    torch.manual_seed(1)
    fast, reference = make_pair(cls, (2, 3, 1), torch.float64)
    x, state, episode_start = random_inputs(cls, (2, 3, 1), 5, 3, torch.float64)
    for pick in (lambda y, final: y.pow(2).sum(), lambda y, final: flat(final)[-1].sum()):
        grads = torch.autograd.grad(pick(*fast(x, state, episode_start)), [x, *flat(state)])
        grads_ref = torch.autograd.grad(
            pick(*reference(x, state, episode_start)), [x, *flat(state)]
        )
        assert_all_close(grads, grads_ref, 1e-10)


def gradcheck_inputs(gates: int, steps=5, batch=3, input_size=2, hidden=3):
    """Float64 leaves ``x, h, W_ih, W_hh, b_ih, b_hh`` and a keep mask with resets."""
    keep = (torch.rand(steps, batch, 1) > 0.3).double()
    keep[0, 0] = 0.0
    keep[2, :] = 0.0  # every row resets
    shapes = [
        (steps, batch, input_size),
        (batch, hidden),
        (gates * hidden, input_size),
        (gates * hidden, hidden),
        (gates * hidden,),
        (gates * hidden,),
    ]
    return [torch.randn(shape).double().requires_grad_() for shape in shapes], keep


def test_lstm_function_gradcheck():
    torch.manual_seed(2)
    (x, h, *weights), keep = gradcheck_inputs(4)
    c = torch.randn_like(h).requires_grad_()

    def run(x, h, c, *weights):
        return fused.LSTMFunction.apply(x, h, c, keep, *weights)

    assert torch.autograd.gradcheck(run, (x, h, c, *weights))


def test_gru_function_gradcheck():
    torch.manual_seed(3)
    (x, h, *weights), keep = gradcheck_inputs(3)

    def run(x, h, *weights):
        return fused.GRUFunction.apply(x, h, keep, *weights)

    assert torch.autograd.gradcheck(run, (x, h, *weights))


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("batch", [8, 512])
def test_acting_step_under_inference_mode(cls, batch):
    """``T = 1`` under ``inference_mode`` (how the policy acts) equals the reference."""
    torch.manual_seed(5)
    fast, reference = make_pair(cls, (6, 16, 1), torch.float32)
    x, state, episode_start = random_inputs(cls, (6, 16, 1), 1, batch, torch.float32)
    with torch.inference_mode():
        y, final = fast(x, state, episode_start)
        y_ref, final_ref = reference(x, state, episode_start)
    assert y.shape == (1, batch, 16)
    assert_all_close([y, *flat(final)], [y_ref, *flat(final_ref)], 1e-5)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_frozen_parameters_and_plain_inputs(cls):
    """Grad mode on but nothing requires grad: the plain loop runs and returns leaf tensors."""
    torch.manual_seed(6)
    fast, reference = make_pair(cls, (3, 4, 2), torch.float64)
    fast.requires_grad_(False)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    episode_start = torch.rand(6, 3) < 0.3
    y, _ = fast(x, None, episode_start)
    y_ref, _ = reference(x, None, episode_start)
    assert not y.requires_grad
    torch.testing.assert_close(y, y_ref.detach(), rtol=1e-10, atol=1e-10)


def test_impl_selection():
    assert resolve_impl("auto", torch.device("cpu"), torch.float64) == "fused"
    assert resolve_impl("auto", torch.device("cpu"), torch.float32, 1 << 30) == "fused"
    cuda = torch.device("cuda")
    on_cuda = "triton" if triton_kernels.available(cuda) else "fused"  # fused: any device
    assert resolve_impl("auto", cuda) == on_cuda
    assert resolve_impl("auto", cuda, torch.float32, 1) == on_cuda
    assert resolve_impl("auto", cuda, torch.float64) == "fused"
    assert resolve_impl("reference", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="impl"):
        LSTM(2, 3, impl="cudnn")
    core = GRU(2, 3)
    core.impl = "reference"  # switchable on a built module
    assert "impl='reference'" in repr(core)


def test_matmul_helpers_agree_with_torch():
    torch.manual_seed(7)
    x, weight, bias, other = torch.randn(7, 5), torch.randn(6, 5), torch.randn(6), torch.randn(7, 6)
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matmul.linear(x, weight, bias), x @ weight.t() + bias, **close)
    torch.testing.assert_close(matmul.linear(x, weight.t().t()), x @ weight.t(), **close)
    torch.testing.assert_close(matmul.linear_add(x, weight, other), other + x @ weight.t(), **close)
    torch.testing.assert_close(matmul.weight_grad(other, x), other.t() @ x, **close)
    wide = torch.randn(7, matmul.SMALL_K + 3)  # the other formulation
    torch.testing.assert_close(matmul.weight_grad(other, wide), other.t() @ wide, **close)
    assert matmul.weight_grad(other, x).is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("impl", ["auto", "fused"])
def test_cuda_paths_equal_reference(cls, impl):
    """What ``auto`` runs on CUDA (checked not to be the reference itself) equals it."""
    assert resolve_impl(impl, torch.device("cuda"), torch.float64, 4 * 5 * 5 * 3) != "reference"
    torch.manual_seed(8)
    fast, reference = make_pair(cls, (3, 5, 2), torch.float64, "cuda")
    fast.impl = impl
    assert fast._implementation(torch.empty(7, 4, 3, dtype=torch.float64, device="cuda")) == "fused"
    x, state, episode_start = random_inputs(cls, (3, 5, 2), 7, 4, torch.float64, "cuda")
    weights = [torch.randn(7, 4, 5, dtype=torch.float64, device="cuda")]
    weights += [torch.randn_like(part) for part in flat(state)]
    outputs, grads = outputs_and_grads(fast, x, state, episode_start, weights)
    outputs_ref, grads_ref = outputs_and_grads(reference, x, state, episode_start, weights)
    assert_all_close(outputs, outputs_ref, 1e-10)
    assert_all_close(grads, grads_ref, 1e-9)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_gradients_accumulate_over_two_backward_passes(cls):
    """``.grad`` accumulates right, also for the LSTM biases that get one shared gradient."""
    torch.manual_seed(9)
    fast, reference = make_pair(cls, (3, 4, 1), torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    episode_start = torch.rand(5, 2) < 0.3
    for core in (fast, reference):
        for _ in range(2):
            core(x, None, episode_start)[0].pow(2).sum().backward()
    for param, param_ref in zip(fast.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param.grad, param_ref.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_input_without_gradient(cls):
    """``x`` not requiring grad (the Function skips ``dx``): parameter gradients still equal."""
    torch.manual_seed(10)
    fast, reference = make_pair(cls, (3, 4, 2), torch.float64)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    episode_start = torch.rand(6, 3) < 0.3
    grads = torch.autograd.grad(fast(x, None, episode_start)[0].sum(), list(fast.parameters()))
    grads_ref = torch.autograd.grad(
        reference(x, None, episode_start)[0].sum(), list(reference.parameters())
    )
    assert_all_close(list(grads), list(grads_ref), 1e-10)
