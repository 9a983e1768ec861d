"""Neural building blocks: reset-aware recurrent cores with torch's parameter layout."""

from recurrl.nn.cores import GRU, LSTM

__all__ = ["GRU", "LSTM"]
