"""The implementations under test, built for one workload and cell from one ``torch.nn``
reference module (all hold copies of the same weights, parameters in the same order).

- ``nn``: ``torch.nn`` as shipped (on the CPU, LSTM goes through oneDNN's RNN primitive).
- ``nn-native``: ``torch.nn`` inside ``torch.backends.mkldnn.flags(enabled=False)``: ATen's
  native path. Only LSTM differs: torch.nn RNN/GRU and the cells never use oneDNN on the CPU,
  so for them ``nn-native`` would time the same code again and is skipped.
- ``fused``: ``fusedrnn.RNN/LSTM/GRU`` and cells (``fusedrnn.from_torch``).
- ``torchscript``: the fastrnns-style scripted LSTM (``script_lstm.py``), LSTM only.
- ``numba``: the ``@njit`` LSTM (``numba_lstm.py``), LSTM only; skipped for H > 512 (its
  single-threaded hand-written recurrent product would take tens of seconds per step there).
Neither TorchScript nor numba baselines take packed sequences.

The LayerNorm cells (``lnlstm``, ``lngru``; torch.nn has none) run:

- ``eager``: ``layernorm_eager.EagerLayerNormLSTM/GRU``, a Python loop over time steps of plain
  torch ops (``layernorm.reference_stack``): their baseline, in ``nn``'s place (validation and
  speedups are against it).
- ``fused``: ``fusedrnn.LayerNormLSTM/GRU``.
- ``torchscript``: the fastrnns-style scripted LayerNorm layers (``script_layernorm.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn

from .workloads import Workload

IMPLS = ("nn", "nn-native", "eager", "fused", "torchscript", "numba")
LN_IMPLS = ("eager", "fused", "torchscript")  # what runs the LayerNorm cells
NUMBA_MAX_H = 512


def baseline(cell: str) -> str:
    """The implementation the others are validated against and sped up over."""
    return "eager" if cell.startswith("ln") else "nn"


def applies(name: str, cell: str) -> bool:
    """Whether ``name`` is an implementation of ``cell`` at all (``eager`` is the LayerNorm
    cells' stand-in for ``torch.nn``; ``nn``, ``nn-native`` and ``numba`` have no LayerNorm)."""
    return (name in LN_IMPLS) if cell.startswith("ln") else name != "eager"


class Skip(Exception):
    """This implementation does not run this workload; the message says why."""


@dataclass
class Inputs:
    x: Tensor | PackedSequence  # [T, B, I], packed, or [B, I] for a cell step
    hx: Tensor | tuple[Tensor, Tensor] | None  # cell steps only
    grad_out: Tensor  # gradient fed to the first output in a training step


@dataclass
class Impl:
    name: str
    module: nn.Module  # owns the parameters whose gradients a training step produces
    call: Callable[[], tuple[Tensor, ...]]  # forward on the workload's inputs


def make_reference(w: Workload, cell: str) -> nn.Module:
    if cell.startswith("ln"):
        if w.cell:
            raise ValueError("the LayerNorm cells run sequence workloads only")
        cls = fusedrnn.LayerNormLSTM if cell == "lnlstm" else fusedrnn.LayerNormGRU
        return cls(w.I, w.H, num_layers=w.layers, bidirectional=w.bidir)
    if w.cell:
        cls = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
        return cls(w.I, w.H)
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return cls(w.I, w.H, num_layers=w.layers, bidirectional=w.bidir)


def make_inputs(w: Workload, cell: str, gen: torch.Generator) -> Inputs:
    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    if w.cell:
        hx = randn(w.B, w.H)
        if cell in ("lstm", "lnlstm"):
            hx = (hx, randn(w.B, w.H))
        return Inputs(randn(w.B, w.I), hx, randn(w.B, w.H))
    x = randn(w.T, w.B, w.I)
    hx = None
    if w.state:
        hx = randn(w.layers * w.dirs, w.B, w.H)
        if cell in ("lstm", "lnlstm"):
            hx = (hx, randn(w.layers * w.dirs, w.B, w.H))
    rows = (w.T, w.B)
    if w.packed:
        x = pack_padded_sequence(x, torch.tensor(w.lengths()), enforce_sorted=True)
        rows = (x.data.shape[0],)
    return Inputs(x, hx, randn(*rows, w.H * w.dirs))


def _flatten(result) -> tuple[Tensor, ...]:
    """Module output -> (output data, h_n[, c_n]) or (h'[, c'])."""
    if isinstance(result, Tensor):
        return (result,)
    out, rest = result
    if isinstance(out, PackedSequence):
        out = out.data
    return (out, *rest) if isinstance(rest, tuple) else (out, rest)


def _caller(module: nn.Module, w: Workload, inputs: Inputs, native: bool = False):
    """The call a step times: ``module(x)``, or ``module(x, hx)`` for a cell step or a layer
    call given its state; ``native`` turns oneDNN off around it (torch's native LSTM)."""
    args = (inputs.x,) if inputs.hx is None else (inputs.x, inputs.hx)
    if native:

        def call():
            with torch.backends.mkldnn.flags(enabled=False):
                return _flatten(module(*args))

        return call

    def call():
        return _flatten(module(*args))

    return call


def build(name: str, w: Workload, cell: str, ref: nn.Module, inputs: Inputs) -> Impl:
    """The implementation ``name`` for this workload, or ``Skip`` with the reason."""
    if cell.startswith("ln"):
        return _build_layernorm(name, w, cell, ref, inputs)
    if name == "eager":
        raise Skip("the eager baseline is the LayerNorm cells' (torch.nn is the others')")
    if name == "nn":
        return Impl(name, ref, _caller(ref, w, inputs))
    if name == "nn-native":
        if cell != "lstm" or w.cell:
            raise Skip("torch.nn uses oneDNN only for the CPU LSTM layer: native = nn here")
        mod = copy.deepcopy(ref)
        return Impl(name, mod, _caller(mod, w, inputs, native=True))
    if name == "fused":
        mod = fusedrnn.from_torch(ref)
        return Impl(name, mod, _caller(mod, w, inputs))
    if name in ("torchscript", "numba"):
        if cell != "lstm":
            raise Skip(f"the {name} baseline is written for LSTM only")
        if w.packed:
            raise Skip(f"the {name} baseline takes no packed sequences")
        if w.state:
            raise Skip(f"the {name} baseline takes no initial state")
        if name == "torchscript":
            from . import script_lstm as lib

            mod = lib.ScriptLSTMCell(ref) if w.cell else lib.ScriptLSTM(ref)
        else:
            if w.H > NUMBA_MAX_H:
                raise Skip(f"numba skipped for H > {NUMBA_MAX_H}: single-threaded loops too slow")
            try:
                from . import numba_lstm as lib
            except ImportError as e:  # numba is in the [test] extra, not a runtime dependency
                raise Skip(f"numba is not installed ({e})") from None

            mod = lib.NumbaLSTMCell(ref) if w.cell else lib.NumbaLSTM(ref)
        return Impl(name, mod, _caller(mod, w, inputs))
    raise ValueError(f"unknown implementation {name!r}; choose from {IMPLS}")


def _build_layernorm(name: str, w: Workload, cell: str, ref: nn.Module, inputs: Inputs) -> Impl:
    """``ref`` is a fusedrnn.LayerNormLSTM/GRU: the eager twin, a copy of it, or the scripted
    layers, all with its weights."""
    if name == "eager":
        from fusedrnn.layernorm_eager import eager_twin

        mod = eager_twin(ref)
    elif name == "fused":
        mod = copy.deepcopy(ref)
    elif name == "torchscript":
        if w.packed:
            raise Skip("the torchscript baseline takes no packed sequences")
        from . import script_layernorm as lib

        mod = lib.ScriptLayerNormLSTM(ref) if cell == "lnlstm" else lib.ScriptLayerNormGRU(ref)
    elif name in IMPLS:
        raise Skip(f"{name} has no LayerNorm {cell[2:].upper()}")
    else:
        raise ValueError(f"unknown implementation {name!r}; choose from {IMPLS}")
    return Impl(name, mod, _caller(mod, w, inputs))
