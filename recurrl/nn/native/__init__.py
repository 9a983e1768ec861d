"""Native (C) time loops for the reset-aware LSTM and GRU, built on first use.

See :mod:`recurrl.nn.native.build` (compiling ``kernels.c`` per ISA level, caching, loading and
checking every call) and :mod:`recurrl.nn.native.layers` (the autograd Functions and the one-step
calls for acting); :mod:`recurrl.nn.native.frozen` has the blocks in which weights stay fixed
(``policy.acting()`` opens one). ``impl="auto"`` uses the kernels for float32 on CPU when the
library can be built and the per-step product is small enough that a single core beats torch's
products (:data:`recurrl.nn.cores.NATIVE_MAX_MACS`); otherwise the ``fused`` PyTorch
implementation.
"""

from recurrl.nn.native.build import available, loaded_variant, unavailable_reason
from recurrl.nn.native.frozen import frozen_weights
from recurrl.nn.native.layers import (
    gru_step,
    lstm_step,
    native_gru_layer,
    native_lstm_layer,
    supports,
)

__all__ = [
    "available",
    "frozen_weights",
    "gru_step",
    "loaded_variant",
    "lstm_step",
    "native_gru_layer",
    "native_lstm_layer",
    "supports",
    "unavailable_reason",
]
