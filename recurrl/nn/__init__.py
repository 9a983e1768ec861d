"""Neural building blocks: reset-aware recurrent cores with torch's parameter layout."""

from recurrl.nn.cores import GRU, LSTM
from recurrl.nn.elman import RNN
from recurrl.nn.mingru import MinGRU

__all__ = ["GRU", "LSTM", "MinGRU", "RNN"]
