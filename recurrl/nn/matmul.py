"""Matrix products for the fused recurrent layers, with a faster CPU backend where it exists.

PyTorch sends float32 ``mm``/``addmm`` on CPU to MKL. On some CPUs (measured: AMD EPYC Zen 5,
torch 2.13) MKL's sgemm runs at about half the speed of oneDNN, which is what ``torch.nn.LSTM``
itself uses on CPU. oneDNN's matrix product is reachable from Python only through the operator
``torch.ops.mkldnn._linear_pointwise`` (made for the inductor compiler; dense tensors in and out,
exact float32). It is private, so it is used only after a probe call agrees with ``torch.mm``, only
for float32 on CPU, and only for products large enough to amortise its ~12 us call overhead:
``ONEDNN_MIN_MACS`` multiply-adds, or a 16th of that with at least ``ONEDNN_MIN_ROWS`` rows
(0: always, a huge number: never); everything else uses ``torch.addmm``. MKL is slowest with few
columns of ``x`` (measured, 256 x 2 @ 2 x 512: 60 us against oneDNN's 24 us, and 167 us for the
weight gradient, which :func:`weight_grad` computes as ``(x^T @ grad)^T`` in 14 us).

All functions compute ``x @ weight^T``-style products; ``weight`` may be any strided view (oneDNN
repacks weights anyway), ``x`` should be contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ONEDNN_MIN_MACS = 1 << 20
"""Smallest product (multiply-accumulates ``M * K * N``) routed to oneDNN."""
ONEDNN_MIN_ROWS = 64
"""Products with at least this many rows ``M`` go to oneDNN from ``ONEDNN_MIN_MACS / 16`` on."""
SMALL_K = 4
NATIVE_MAX_K = 16
"""Products with at most this many input columns use the native kernel at any size up to
``NATIVE_MAX_MACS`` (measured, 256 x 2 @ 2 x 512, an input projection: 5 us against oneDNN's 24)."""
NATIVE_MAX_MACS = 1 << 24
"""Largest product the native kernel takes: it uses one thread, oneDNN and MKL may use several."""
"""Weight gradients with at most this many input columns are computed as ``(x^T @ grad)^T``."""

_onednn_works: bool | None = None


def _onednn_linear() -> object | None:
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def onednn_available() -> bool:
    """Whether the oneDNN product exists in this torch build and agrees with ``torch.mm``."""
    global _onednn_works
    if _onednn_works is None:
        _onednn_works = False
        linear = _onednn_linear()
        if linear is not None and torch.backends.mkldnn.is_available():
            try:
                with torch.no_grad():  # own generator: the probe must not move the global one
                    generator = torch.Generator().manual_seed(0)
                    x = torch.randn(3, 5, generator=generator)
                    weight = torch.randn(4, 5, generator=generator)
                    result = linear(x, weight, None, "none", [], "")
                    _onednn_works = torch.allclose(result, x @ weight.t(), atol=1e-5)
            except RuntimeError:
                _onednn_works = False
    return _onednn_works


def use_onednn(like: Tensor, macs: int, rows: int = 0) -> bool:
    """Whether a product of ``macs`` multiply-adds over ``rows`` rows (dtype, device of ``like``)
    uses oneDNN."""
    return (
        (macs >= ONEDNN_MIN_MACS or (rows >= ONEDNN_MIN_ROWS and macs >= ONEDNN_MIN_MACS >> 4))
        and like.device.type == "cpu"
        and like.dtype == torch.float32
        and torch.backends.mkldnn.enabled  # respect a user who turned oneDNN off
        and onednn_available()
    )


def use_native(like: Tensor, rows: int, columns: int, outputs: int) -> bool:
    """Whether :func:`linear` computes ``x[rows, columns] @ W[outputs, columns]^T`` with the native
    kernel: float32 on CPU, at most ``NATIVE_MAX_MACS``, and either few input columns (at most
    ``NATIVE_MAX_K``) or too small for oneDNN. The acting programs of
    :mod:`recurrl.nn.native.program` ask the same to compute what the layers would."""
    macs = rows * columns * outputs
    return (
        macs <= NATIVE_MAX_MACS
        and like.dtype == torch.float32
        and like.is_cpu
        and (columns <= NATIVE_MAX_K or not use_onednn(like, macs, rows))
        and _native()[0]() is not None
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x[M, K] @ weight[N, K]^T + bias[N]`` -> ``[M, N]``."""
    rows, columns, outputs = x.shape[0], x.shape[1], weight.shape[0]
    if use_native(x, rows, columns, outputs):
        return _native_linear(x, weight, bias)
    if use_onednn(x, rows * columns * outputs, rows):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")
    if bias is None:
        return x @ weight.t()
    return torch.addmm(bias, x, weight.t())


def linear_add_for(like: Tensor, macs: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``f(x, weight, other) = other + x @ weight^T``, backend chosen once for a loop of products.

    Args:
        like: a tensor with the dtype and device of the operands.
        macs: multiply-accumulates of one product.
    """
    if use_onednn(like, macs):
        onednn = torch.ops.mkldnn._linear_pointwise.binary
        return lambda x, weight, other: onednn(x, other, weight, None, "add")
    return lambda x, weight, other: torch.addmm(other, x, weight.t())


def linear_bias_for(like: Tensor, macs: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``f(x, weight, bias) = x @ weight^T + bias``, backend chosen once for a loop of products.

    Args: as :func:`linear_add_for`.
    """
    if use_onednn(like, macs):
        onednn = torch.ops.mkldnn._linear_pointwise
        return lambda x, weight, bias: onednn(x, weight, bias, "none", [], "")
    return lambda x, weight, bias: torch.addmm(bias, x, weight.t())


def weight_grad(
    grad_out: Tensor, inputs: Tensor, transpose: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """Gradient of a weight: ``grad_out[M, N]^T @ inputs[M, K]`` -> ``[N, K]`` (contiguous).

    Args:
        grad_out: ``[M, N]``; inputs: ``[M, K]``.
        transpose: ``f(m) = m.t().contiguous()`` for the copies this makes, where one faster
            than torch's exists (the native kernels': dW_hh of an LSTM layer, 256 x 512 @
            256 x 128, in 200 us instead of 218, measured inside a PPO minibatch step).
    """
    transpose = transpose or _transpose
    rows, columns = inputs.shape
    if not use_onednn(inputs, rows * grad_out.shape[1] * columns, rows):
        return grad_out.t() @ inputs
    if columns <= SMALL_K:
        return (inputs.t() @ grad_out).t().contiguous()
    # (inputs^T @ grad_out)^T: oneDNN wants a contiguous left operand; the transposed right
    # one is repacked for free, and inputs is the smaller of the two to copy.
    product = torch.ops.mkldnn._linear_pointwise(
        transpose(inputs), grad_out.t(), None, "none", [], ""
    )  # (K, N)
    return transpose(product)


def _transpose(matrix: Tensor) -> Tensor:
    return matrix.t().contiguous()


_native_functions: tuple | None = None


def _native() -> tuple:
    """``(library, transposed)`` of :mod:`recurrl.nn.native`, imported on first use (that
    package imports this module)."""
    global _native_functions
    if _native_functions is None:
        from recurrl.nn.native.build import library
        from recurrl.nn.native.frozen import transposed

        _native_functions = (library, transposed)
    return _native_functions


def _native_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``bias + x @ weight^T`` by ``recurrl_linear_forward``: each element the bias plus the
    products in order over ``k`` (``W^T`` cached inside ``frozen_weights`` blocks)."""
    rows, columns, outputs = x.shape[0], x.shape[1], weight.shape[0]
    library, transposed = _native()
    x = x.contiguous()
    weight_t = transposed(weight)
    bias = x.new_zeros(outputs) if bias is None else bias.detach().contiguous()
    y = x.new_empty(rows, outputs)
    library().recurrl_linear_forward(
        rows, columns, outputs, 0, x.data_ptr(), weight_t.data_ptr(), bias.data_ptr(), y.data_ptr()
    )
    return y
