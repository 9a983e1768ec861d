"""The native tanh and the ``Tanh`` module against torch's: accuracy, special values, gradients,
which path runs, and the fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recurrl.nn import activations, native
from recurrl.nn.native import ops
from recurrl.policy.encoders import ACTIVATIONS, mlp

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.unavailable_reason()}"
)
needs_fast_tanh = pytest.mark.skipif(
    not ops.tanh_is_fast(), reason="native tanh unavailable or slower than torch's here"
)


@needs_native
def test_native_tanh_is_correctly_rounded():
    x = torch.cat([torch.linspace(-30, 30, 600_001), torch.randn(400_003) * 2])
    exact = torch.tanh(x.double())
    ours = ops.tanh(x)
    assert (ours != exact.float()).float().mean() < 1e-5  # the nearest float, but for rare ties
    assert ((ours.double() - exact).abs() / exact.abs().clamp_min(1e-30)).max() < 6e-8  # half ulp
    torch.testing.assert_close(ours, torch.tanh(x), rtol=1.2e-7, atol=0)  # torch's: within an ulp


@needs_native
def test_native_tanh_special_values():
    tiny = torch.tensor([1e-8, -1e-8, 3e-20, 1e-30, 1e-40, -1.4e-45])  # the last two subnormal
    assert torch.equal(ops.tanh(tiny), tiny)  # tanh(x) = x here, not 2 sigmoid(2x) - 1 = 0
    zeros = ops.tanh(torch.tensor([0.0, -0.0]))
    assert zeros.tolist() == [0.0, 0.0] and zeros.signbit().tolist() == [False, True]
    big = torch.tensor([9.02, -9.02, 20.0, -20.0, 100.0, -100.0, 1e30, float("inf"), -float("inf")])
    assert torch.equal(ops.tanh(big), torch.tanh(big))  # exactly +-1
    nan = ops.tanh(torch.tensor([float("nan"), 1.0, -float("nan")]))
    assert nan[0].isnan() and nan[2].isnan() and nan[1] == torch.tanh(torch.tensor(1.0))


@needs_native
@pytest.mark.parametrize("shape", [(0,), (1,), (15,), (17,), (16, 16, 64), (3, 5, 7)])
def test_native_tanh_shapes_and_non_contiguous_inputs(shape):
    x = torch.randn(shape)
    torch.testing.assert_close(ops.tanh(x), torch.tanh(x), rtol=1.2e-7, atol=0)
    wide = torch.randn(64, 130)[:, 1:129].t()  # (128, 64), neither row- nor column-contiguous
    torch.testing.assert_close(ops.tanh(wide), torch.tanh(wide), rtol=1.2e-7, atol=0)
    flat = x.flatten()
    assert torch.equal(ops.tanh(flat[3:]), ops.tanh(flat)[3:])  # the same in any vector lane


def counting_native(monkeypatch) -> list[int]:
    """Count the calls that reach the native kernel (numbers of elements)."""
    calls: list[int] = []
    real = ops.tanh

    def counted(x):
        calls.append(x.numel())
        return real(x)

    monkeypatch.setattr(ops, "tanh", counted)
    return calls


@needs_fast_tanh
def test_tanh_module_gradients_equal_torch(monkeypatch):
    calls = counting_native(monkeypatch)
    x = torch.randn(16, 16, 64, requires_grad=True)
    weights = torch.randn(16, 16, 64)
    y = activations.Tanh()(x)
    assert type(y.grad_fn).__name__ == "NativeTanhFunctionBackward"
    (y * weights).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    y_ref = torch.tanh(x_ref)
    (y_ref * weights).sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1.2e-7, atol=0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-6)
    assert calls == [16 * 16 * 64]


@needs_fast_tanh
def test_tanh_picks_its_path_by_size_grad_and_dtype(monkeypatch):
    calls = counting_native(monkeypatch)
    small = activations.NATIVE_TANH_MIN_ELEMENTS_NO_GRAD
    tiny = torch.randn(small - 1)  # acting with few envs: torch's own
    assert torch.equal(activations.tanh(tiny), torch.tanh(tiny))
    with torch.no_grad():
        activations.tanh(torch.randn(small).requires_grad_())  # no autograd: native from `small` on
    with torch.inference_mode():
        activations.Tanh()(torch.randn(8, 64))  # acting with 8 envs
    grad_mid = activations.tanh(torch.randn(small, requires_grad=True))  # autograd: too small
    assert type(grad_mid.grad_fn).__name__ == "TanhBackward0"
    double = torch.randn(activations.NATIVE_TANH_MIN_ELEMENTS, dtype=torch.float64)
    assert torch.equal(activations.tanh(double), torch.tanh(double))
    assert calls == [small, 8 * 64]


@pytest.mark.parametrize("missing", ["library", "fast tanh"])
def test_without_the_kernels_tanh_is_torchs(missing, monkeypatch):
    if missing == "library":
        monkeypatch.setattr(ops, "library", lambda: None)
    else:  # an SSE2-only build: its tanh is slower than torch's
        monkeypatch.setattr(ops, "_tanh_is_fast", False)
    x = torch.randn(16, 16, 64, requires_grad=True)
    y = activations.Tanh()(x)
    assert type(y.grad_fn).__name__ == "TanhBackward0" and torch.equal(y, torch.tanh(x))


def test_tanh_module_is_an_nn_tanh_without_state():
    module = ACTIVATIONS["tanh"]()
    assert isinstance(module, nn.Tanh) and repr(module) == "Tanh()"
    assert not list(module.parameters()) and module.state_dict() == {}
    stack, _ = mlp(128, [64, 64], "tanh")
    assert list(stack.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = torch.randn(16, 16, 128)
    reference = nn.Sequential(*[nn.Tanh() if isinstance(m, nn.Tanh) else m for m in stack])
    torch.testing.assert_close(stack(x), reference(x), rtol=1e-6, atol=1e-6)
