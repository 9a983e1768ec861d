"""Native (C) time loops for the reset-aware LSTM and GRU, built on first use.

See :mod:`recurrl.nn.native.build` (compiling and caching ``kernels.c``) and
:mod:`recurrl.nn.native.layers` (the autograd Functions); :mod:`recurrl.nn.native.ops` has a
vectorised tanh and a transpose for whole tensors, :mod:`recurrl.nn.native.mlp` dense layer
stacks, :mod:`recurrl.nn.native.program` whole acting steps in one call and
:mod:`recurrl.nn.native.frozen` the blocks in which weights stay fixed. ``impl="auto"`` uses
the cells' kernels for float32 on CPU when the library can be built and the per-step product is
small enough that a single core beats oneDNN (:data:`NATIVE_MAX_MACS`); otherwise the ``fused``
PyTorch implementation.
"""

from recurrl.nn.native.build import available, unavailable_reason
from recurrl.nn.native.layers import (
    frozen_weights,
    native_gru_layer,
    native_lstm_layer,
    supports,
)

__all__ = [
    "available",
    "frozen_weights",
    "native_gru_layer",
    "native_lstm_layer",
    "supports",
    "unavailable_reason",
]
