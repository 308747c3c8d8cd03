"""fusedrnn: fused RNN, LSTM and GRU kernels for PyTorch, drop-in for torch.nn."""

from importlib import metadata as _metadata

import torch  # noqa: F401  (libtorch must be loaded before the extension)

from . import _ops
from ._ops import build_info, gru_cell, gru_layer, lstm_cell, lstm_layer, rnn_cell, rnn_layer
from .deploy import safe_globals
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, convert, from_torch

torch.serialization.add_safe_globals(safe_globals())  # whole models load with weights_only

_APPS = ("data", "train", "forecast")  # need the [apps] extra: imported on first use


def __getattr__(name):
    if name in _APPS:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fusedrnn' has no attribute {name!r}")


try:
    __version__ = _metadata.version("fusedrnn")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "_ops",
    "build_info",
    "convert",
    "from_torch",
    "gru_cell",
    "gru_layer",
    "lstm_cell",
    "lstm_layer",
    "rnn_cell",
    "rnn_layer",
    "safe_globals",
]
