"""Neural building blocks: reset-aware recurrent cores with torch's parameter layout, and the
windowed causal transformer and TCN behind the same interface."""

from recurrl.nn.attention import CausalTransformer
from recurrl.nn.cores import GRU, LSTM
from recurrl.nn.elman import RNN
from recurrl.nn.mingru import MinGRU
from recurrl.nn.tcn import TCN

__all__ = ["GRU", "LSTM", "TCN", "CausalTransformer", "MinGRU", "RNN"]
