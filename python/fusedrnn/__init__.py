"""fusedrnn: fused RNN, LSTM and GRU kernels for PyTorch, drop-in for torch.nn.

The core (this module's names) needs torch and numpy only. The application modules
(``fusedrnn.data``, ``train``, ``experiments``, ``forecast``, ``bench``, ...) load on first
use, so ``import fusedrnn`` stays fast; they need ``pip install 'fusedrnn[apps]'``.
"""

from importlib import metadata as _metadata

import torch  # noqa: F401  (libtorch must be loaded before the extension)

from . import _extras, _torch_check

# Before the extension loads: a torch other than the build's gives a clear ImportError here
# instead of an undefined symbol (or a crash) inside _C.
_torch_check.check_build()

from . import _ops  # noqa: E402
from ._ops import (  # noqa: E402
    build_info,
    cpu_cache_info,
    empty_cpu_cache,
    gru_cell,
    gru_layer,
    lstm_cell,
    lstm_layer,
    rnn_cell,
    rnn_layer,
    set_cpu_cache_limit,
)
from .deploy import safe_globals  # noqa: E402
from .layernorm import (  # noqa: E402
    LayerNormGRU,
    LayerNormGRUCell,
    LayerNormLSTM,
    LayerNormLSTMCell,
)
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, convert, from_torch  # noqa: E402

torch.serialization.add_safe_globals(safe_globals())  # whole models load with weights_only

try:
    __version__ = _metadata.version("fusedrnn")
except _metadata.PackageNotFoundError:  # pragma: no cover - not installed by pip
    from . import _build_config

    __version__ = _build_config.VERSION

# Reachable as attributes (fusedrnn.data), imported on first access.
_SUBMODULES = (
    "bench",
    "check",
    "cli",
    "data",
    "experiments",
    "forecast",
    "reference",
    "reference_torch",
    "train",
    "tuning",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _extras.import_submodule(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "LayerNormGRU",
    "LayerNormGRUCell",
    "LayerNormLSTM",
    "LayerNormLSTMCell",
    "RNNCell",
    "_ops",
    "build_info",
    "convert",
    "cpu_cache_info",
    "empty_cpu_cache",
    "from_torch",
    "gru_cell",
    "gru_layer",
    "lstm_cell",
    "lstm_layer",
    "rnn_cell",
    "rnn_layer",
    "safe_globals",
    "set_cpu_cache_limit",
]
