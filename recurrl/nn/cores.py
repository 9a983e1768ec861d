"""Recurrent cores: ``core(x[T, B, I], state, episode_start[T, B]) -> (y[T, B, H], state)``.

``LSTM`` and ``GRU`` are written here (not wrappers over ``torch.nn.LSTM``/``GRU``) so that the
episode-start reset happens inside the sequence. Their parameters are named and laid out as
torch's (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ...), so
``core.load_state_dict(torch.nn.LSTM(...).state_dict())`` works.

State: LSTM ``(h, c)``, GRU ``h``; each tensor ``[num_layers, B, H]``.

Four implementations compute the same thing: ``"reference"`` (:mod:`recurrl.nn.reference`, the
readable definition, autograd through the unrolled loop), ``"fused"`` (:mod:`recurrl.nn.fused`,
whole-sequence autograd Functions with a hand-written backward, any device and dtype),
``"native"`` (:mod:`recurrl.nn.native`, the same Functions with the time loops in C, float32 on
CPU, built on first use with the machine's C compiler) and ``"triton"``
(:mod:`recurrl.nn.triton_kernels`, one Triton GPU kernel launch per layer for the whole sequence,
float32/float64 on CUDA when triton is installed). ``impl="auto"`` (the default) picks:
``"native"`` on CPU for float32 when the per-step recurrent product is at most
:data:`NATIVE_MAX_MACS` multiply-adds and the kernels can be built; ``"triton"`` on CUDA for
float32 when triton is installed; else ``"fused"`` (pure PyTorch, so any device and dtype).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recurrl.nn import fused, native, reference, triton_kernels

LSTMState = tuple[Tensor, Tensor]
IMPLEMENTATIONS = ("auto", "native", "fused", "triton", "reference")
NATIVE_MAX_MACS = 1 << 24
"""Largest per-step recurrent product (``B * H * gates * H``) that ``auto`` gives the C kernels:
above it one torch product per step (``fused``, which may use several threads) was measured
faster than their single-core loop (``(32, 256, 256)`` LSTM: 67M multiply-adds per step)."""


def resolve_impl(
    impl: str, device: torch.device, dtype: torch.dtype = torch.float32, step_macs: int = 0
) -> str:
    """The implementation ``impl`` stands for (``"auto"`` resolved).

    Args:
        impl: one of :data:`IMPLEMENTATIONS`.
        device, dtype: of the inputs.
        step_macs: multiply-adds of one step's recurrent product, ``B * H * gates * H``.
    """
    if impl != "auto":
        return impl
    cpu_float32 = device.type == "cpu" and dtype == torch.float32
    if cpu_float32 and step_macs <= NATIVE_MAX_MACS and native.available():
        return "native"
    # Not on CPU: there triton runs only under TRITON_INTERPRET=1, its interpreter, for tests.
    cuda_float32 = device.type == "cuda" and dtype == torch.float32
    if cuda_float32 and triton_kernels.available(device):
        return "triton"
    return "fused"


LSTM_LAYERS = {
    "native": native.native_lstm_layer,
    "fused": fused.lstm_layer,
    "triton": triton_kernels.lstm_layer,
    "reference": reference.lstm_layer_reference,
}
GRU_LAYERS = {
    "native": native.native_gru_layer,
    "fused": fused.gru_layer,
    "triton": triton_kernels.gru_layer,
    "reference": reference.gru_layer_reference,
}


def _check_inputs(x: Tensor, episode_start: Tensor | None, input_size: int, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ValueError(f"{name} expects x of shape [T, B, {input_size}], got {list(x.shape)}")
    if episode_start is not None and tuple(episode_start.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"{name}: episode_start must be [T, B] = {list(x.shape[:2])}, "
            f"got {list(episode_start.shape)}"
        )


def _stack(layers: list[Tensor]) -> Tensor:
    """Per-layer states ``[B, H]`` -> ``[num_layers, B, H]`` (a view for one layer)."""
    return layers[0].unsqueeze(0) if len(layers) == 1 else torch.stack(layers)


def _keep_mask(x: Tensor, episode_start: Tensor | None) -> Tensor:
    """``[T, B, 1]`` multiplier: 0 where the state resets before step t."""
    if episode_start is None:
        return torch.ones(x.shape[0], x.shape[1], 1, dtype=x.dtype, device=x.device)
    return (1.0 - episode_start.to(x.dtype)).unsqueeze(-1)


class _RecurrentBase(nn.Module):
    gate_multiplier: int = 1

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, impl: str = "auto"
    ) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"{type(self).__name__}: input_size, hidden_size and num_layers must be >= 1, got "
                f"{input_size}, {hidden_size}, {num_layers}"
            )
        if impl not in IMPLEMENTATIONS:
            raise ValueError(
                f"{type(self).__name__}: impl must be one of {IMPLEMENTATIONS}, got {impl!r}"
            )
        self.impl = impl
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        gates = self.gate_multiplier * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(gates, layer_input))
            )
            self.register_parameter(
                f"weight_hh_l{layer}", nn.Parameter(torch.empty(gates, hidden_size))
            )
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(gates)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(gates)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn.LSTM``/``GRU``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        parameters = self._parameters  # direct lookups: Module.__getattr__ costs ~1 us each
        return (
            parameters[f"weight_ih_l{layer}"],
            parameters[f"weight_hh_l{layer}"],
            parameters[f"bias_ih_l{layer}"],
            parameters[f"bias_hh_l{layer}"],
        )

    def _zeros(self, batch_size: int, device=None, dtype=None) -> Tensor:
        weight = self.weight_hh_l0
        return torch.zeros(
            self.num_layers,
            batch_size,
            self.hidden_size,
            device=device or weight.device,
            dtype=dtype or weight.dtype,
        )

    def _check_state(self, state: Tensor, batch_size: int) -> None:
        expected = (self.num_layers, batch_size, self.hidden_size)
        if tuple(state.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: state must be [num_layers, B, H] = {list(expected)}, "
                f"got {list(state.shape)}"
            )

    def _implementation(self, x: Tensor) -> str:
        """The implementation to run ``x`` with; refuses ``native``/``triton`` where they cannot
        run."""
        gates = self.gate_multiplier * self.hidden_size
        impl = resolve_impl(self.impl, x.device, x.dtype, x.shape[1] * gates * self.hidden_size)
        if impl == "native" and self.impl != "auto" and not native.supports(x):  # auto checked
            why = native.unavailable_reason() or f"got {x.dtype} on {x.device}"
            raise ValueError(
                f"{type(self).__name__}: impl='native' runs float32 on CPU with a C compiler "
                f"({why}); use impl='auto'"
            )
        if impl == "triton" and not triton_kernels.supports(x):  # never picked by auto then
            why = triton_kernels.unavailable_reason(x.device) or f"got {x.dtype}"
            raise ValueError(
                f"{type(self).__name__}: impl='triton' runs float32 on CUDA with triton "
                f"installed (float64 in its CPU interpreter only) ({why}); use impl='auto' or "
                "'fused'"
            )
        return impl

    def _native_step(self, x: Tensor) -> bool:
        """Whether :meth:`step` can call the native kernels directly (no autograd, native)."""
        if torch.is_grad_enabled() or x.dim() != 2 or x.shape[-1] != self.input_size:
            return False  # forward records gradients, or checks and reports the shape
        return self._implementation(x.unsqueeze(0)) == "native"

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"impl={self.impl!r}"
        )


class LSTM(_RecurrentBase):
    """Reset-aware multi-layer LSTM with ``torch.nn.LSTM``'s parameter layout.

    Args:
        input_size: features of ``x``.
        hidden_size: features of ``h`` and ``c``.
        num_layers: stacked layers; every layer resets at the same steps.
        impl: ``"auto"`` (fastest measured for the device, dtype and size), ``"native"``,
            ``"fused"``, ``"triton"`` or ``"reference"``; an attribute, so it can also be
            switched on a built module.
    """

    gate_multiplier = 4

    def initial_state(self, batch_size: int, device=None, dtype=None) -> LSTMState:
        """Zero state ``(h, c)``, each ``[num_layers, B, H]``."""
        return (self._zeros(batch_size, device, dtype), self._zeros(batch_size, device, dtype))

    def forward(
        self, x: Tensor, state: LSTMState | None = None, episode_start: Tensor | None = None
    ) -> tuple[Tensor, LSTMState]:
        """Run ``x[T, B, I]`` from ``state``; returns ``(y[T, B, H], (h, c))``."""
        _check_inputs(x, episode_start, self.input_size, "LSTM")
        if state is None:
            state = self.initial_state(x.shape[1], x.device, x.dtype)
        h0, c0 = state
        self._check_state(h0, x.shape[1])
        self._check_state(c0, x.shape[1])
        keep = _keep_mask(x, episode_start)
        run_layer = LSTM_LAYERS[self._implementation(x)]
        hs, cs = [], []
        y = x
        for layer in range(self.num_layers):
            y, h, c = run_layer(y, h0[layer], c0[layer], keep, *self.layer_weights(layer))
            hs.append(h)
            cs.append(c)
        return y, (_stack(hs), _stack(cs))

    def step(self, x: Tensor, state: LSTMState, episode_start: Tensor) -> tuple[Tensor, LSTMState]:
        """One step for acting: ``x[B, I]``, ``episode_start[B]`` -> ``(y[B, H], (h, c))``.

        The same numbers as ``forward(x[None], state, episode_start[None])`` (tested), with the
        native kernels called directly when no gradient is being recorded.
        """
        if not self._native_step(x):
            y, state = self(x.unsqueeze(0), state, episode_start.unsqueeze(0))
            return y[0], state
        keep = _keep_mask(x, episode_start).squeeze(-1)  # (B,)
        h0, c0 = state
        hs, cs = [], []
        y = x.contiguous()
        for layer in range(self.num_layers):
            h, c = h0[layer].contiguous(), c0[layer].contiguous()
            y, c = native.lstm_step(y, h, c, keep, *self.layer_weights(layer))
            hs.append(y)
            cs.append(c)
        return y, (_stack(hs), _stack(cs))


def run_hidden_layers(
    module: _RecurrentBase,
    x: Tensor,
    state: Tensor | None,
    episode_start: Tensor | None,
    layers: dict,
) -> tuple[Tensor, Tensor]:
    """``module``'s layers over ``x[T, B, I]`` for a cell whose state is ``h`` alone (GRU, the
    Elman RNN): ``layers[impl](x, h0, keep, *weights) -> (y, h)``; returns ``(y, h)``."""
    _check_inputs(x, episode_start, module.input_size, type(module).__name__)
    if state is None:
        state = module.initial_state(x.shape[1], x.device, x.dtype)
    module._check_state(state, x.shape[1])
    keep = _keep_mask(x, episode_start)
    run_layer = layers[module._implementation(x)]
    hs = []
    y = x
    for layer in range(module.num_layers):
        y, h = run_layer(y, state[layer], keep, *module.layer_weights(layer))
        hs.append(h)
    return y, _stack(hs)


class GRU(_RecurrentBase):
    """Reset-aware multi-layer GRU with ``torch.nn.GRU``'s parameter layout.

    Args: as :class:`LSTM`.
    """

    gate_multiplier = 3

    def initial_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
        """Zero state ``h`` ``[num_layers, B, H]``."""
        return self._zeros(batch_size, device, dtype)

    def forward(
        self, x: Tensor, state: Tensor | None = None, episode_start: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run ``x[T, B, I]`` from ``state``; returns ``(y[T, B, H], h)``."""
        return run_hidden_layers(self, x, state, episode_start, GRU_LAYERS)

    def step(self, x: Tensor, state: Tensor, episode_start: Tensor) -> tuple[Tensor, Tensor]:
        """One step for acting: as :meth:`LSTM.step`, state ``h``."""
        if not self._native_step(x):
            y, state = self(x.unsqueeze(0), state, episode_start.unsqueeze(0))
            return y[0], state
        keep = _keep_mask(x, episode_start).squeeze(-1)  # (B,)
        hs = []
        y = x.contiguous()
        for layer in range(self.num_layers):
            h = state[layer].contiguous()
            y = native.gru_step(y, h, keep, *self.layer_weights(layer))
            hs.append(y)
        return y, _stack(hs)
