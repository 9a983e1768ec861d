"""The native MLP stack (``recurrl.nn.native.mlp``) against the ``nn.Linear`` + activation stack
it replaces: outputs and gradients, rows independent of the batch, which path runs, fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recurrl.nn import native
from recurrl.nn.native import mlp as native_mlp
from recurrl.nn.native.layers import frozen_weights
from recurrl.policy.encoders import MLP, mlp

needs_native = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable: {native.unavailable_reason()}"
)


def layer_by_layer(stack: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The definition: each layer's own forward (torch's products and activations)."""
    for layer in stack:
        x = layer.forward(x) if not isinstance(layer, nn.Tanh) else torch.tanh(x)
    return x


def native_node(y: torch.Tensor) -> bool:
    """Whether ``y`` came out of the native stack's autograd node (through a view)."""
    node = y.grad_fn
    if type(node).__name__ == "ViewBackward0":
        node = node.next_functions[0][0]
    return type(node).__name__ == "NativeMLPFunctionBackward"


def grads(y: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor) -> list:
    return list(torch.autograd.grad((y * weight).sum(), inputs, allow_unused=True))


@needs_native
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize(
    "shape, sizes",
    [
        ((16, 16, 128), [64, 64]),  # a PPO minibatch of sb3's MlpLstmPolicy heads
        ((8, 128), [64, 64]),  # one acting step of 8 envs
        ((1, 5), [3]),
        ((13, 70), [33, 1]),  # tile remainders: rows, vectors, single columns
        ((3, 7, 19), [40, 17, 2]),
    ],
)
def test_native_mlp_matches_the_layer_stack(activation, shape, sizes):
    torch.manual_seed(0)
    stack, _ = mlp(shape[-1], sizes, activation)
    x = torch.randn(shape, requires_grad=True)
    y = stack(x)
    assert native_node(y)
    y_ref = layer_by_layer(stack, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    weight = torch.randn_like(y)
    inputs = [x, *stack.parameters()]
    for ours, reference in zip(grads(y, inputs, weight), grads(y_ref, inputs, weight), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@needs_native
def test_native_mlp_gradients_against_float64():
    """Float32 kernels within float32 rounding of the float64 definition."""
    torch.manual_seed(1)
    stack, _ = mlp(24, [32, 16], "tanh")
    x = torch.randn(37, 24, requires_grad=True)
    weight = torch.randn(37, 16)
    ours = grads(stack(x), [x, *stack.parameters()], weight)
    stack64 = MLP(*[layer for layer in stack]).double()  # same modules, now float64: torch path
    assert stack64._plan is False  # .double() made it look at its layers again
    x64 = x.detach().double().requires_grad_()
    reference = grads(layer_by_layer(stack64, x64), [x64, *stack64.parameters()], weight.double())
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


@needs_native
def test_rows_do_not_depend_on_the_batch_or_on_autograd():
    """Acting (a few rows, no autograd) computes the training minibatch's numbers bit for bit."""
    torch.manual_seed(2)
    stack, _ = mlp(128, [64, 64], "tanh")
    x = torch.randn(16, 16, 128, requires_grad=True)
    y = stack(x)
    with torch.inference_mode(), frozen_weights():
        assert torch.equal(stack(x.detach()), y.detach())
        for rows in (1, 3, 8, 9):
            assert torch.equal(stack(x.detach()[5, :rows]), y.detach()[5, :rows])


@needs_native
def test_input_without_grad_still_trains_the_weights():
    torch.manual_seed(3)
    stack, _ = mlp(10, [8, 4], "relu")
    x = torch.randn(30, 10)  # an observation: no gradient wanted
    weight = torch.randn(30, 4)
    (stack(x) * weight).sum().backward()
    ours = [p.grad.clone() for p in stack.parameters()]
    stack.zero_grad()
    (layer_by_layer(stack, x) * weight).sum().backward()
    for a, p in zip(ours, stack.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-5)


@needs_native
def test_frozen_weights_see_updates_between_blocks():
    """The transposed weights are cached inside a block only; an in-place update (fused Adam does
    not bump version counters) between blocks is seen."""
    stack, _ = mlp(6, [5], "tanh")
    x = torch.randn(4, 6)
    with torch.no_grad(), frozen_weights():
        before = stack(x)
    with torch.no_grad():
        stack[0].weight.mul_(2.0)
    with torch.no_grad(), frozen_weights():
        after = stack(x)
    torch.testing.assert_close(after, layer_by_layer(stack, x), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(before, after)


def test_stacks_the_kernels_cannot_run_use_torch(monkeypatch):
    x = torch.randn(4, 6, requires_grad=True)
    sigmoid = MLP(nn.Linear(6, 5), nn.Sigmoid())  # an activation the kernels do not have
    assert sigmoid._native_params() is None
    assert type(sigmoid(x).grad_fn).__name__ == "SigmoidBackward0"
    stack, _ = mlp(6, [5], "tanh")
    assert not native_mlp.supports(x.double(), [stack[0].weight])
    monkeypatch.setattr(native_mlp, "MAX_MACS", 4 * 6 * 5 - 1)  # too big for one thread
    assert not native_mlp.supports(x, [stack[0].weight])
    assert type(stack(x).grad_fn).__name__ == "TanhBackward0"
    monkeypatch.setattr(native_mlp, "library", lambda: None)
    monkeypatch.setattr(native_mlp, "MAX_MACS", 1 << 24)
    assert type(stack(x).grad_fn).__name__ == "TanhBackward0"
    empty = MLP()
    assert empty._native_params() == ((), ()) and empty(x) is x


@needs_native
@pytest.mark.parametrize("sizes", [[64, 64], []], ids=["mlp", "no-layers"])
def test_forward_with_a_linear_tail(sizes):
    """``stack.forward_with(x, head)`` = ``head(stack(x))``, the head in the same native call."""
    torch.manual_seed(4)
    stack, features = mlp(32, sizes, "tanh")
    head = nn.Linear(features, 3)
    x = torch.randn(5, 7, 32, requires_grad=True)
    y = stack.forward_with(x, head)
    assert native_node(y)
    y_ref = head(layer_by_layer(stack, x))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    weight = torch.randn_like(y)
    inputs = [x, *stack.parameters(), *head.parameters()]
    for ours, reference in zip(grads(y, inputs, weight), grads(y_ref, inputs, weight), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    no_bias = nn.Linear(features, 3, bias=False)  # the kernels want a bias: torch's path
    y_no_bias = stack.forward_with(x, no_bias)
    assert not native_node(y_no_bias) and torch.equal(y_no_bias, no_bias(stack(x)))


@needs_native
def test_replaced_parameters_are_used():
    """``load_state_dict(assign=True)`` puts new Parameter objects in: the stack reads them."""
    stack, _ = mlp(6, [5], "tanh")
    x = torch.randn(4, 6)
    stack(x)  # looked at its layers
    other, _ = mlp(6, [5], "tanh")
    stack.load_state_dict(other.state_dict(), assign=True)
    torch.testing.assert_close(stack(x), layer_by_layer(other, x), rtol=1e-6, atol=1e-6)
