"""LayerNorm LSTM and GRU (Ba, Kiros & Hinton 2016, as haste), fused on the CPU.

``LayerNormLSTM`` / ``LayerNormGRU`` take the constructor arguments of ``torch.nn.LSTM`` /
``torch.nn.GRU`` (no ``proj_size``) and have their forward signature and outputs
(``PackedSequence``, unbatched input, ``hx``), torch.nn's parameter names plus, per layer and
direction (suffix ``_l{k}`` / ``_l{k}_reverse``), ``layernorm_ih_weight_l{k}`` and
``layernorm_hh_weight_l{k}`` ``[G*H]`` (initialised to 1) and, for the LSTM,
``layernorm_c_weight_l{k}`` and ``layernorm_c_bias_l{k}`` ``[H]`` (1 and 0; the latter only
with ``bias=True``). The cells have the same parameters without suffix.

Every layer and direction runs in one call of the fused stack op (``ln_lstm_stack`` /
``ln_gru_stack``, ``cpp/include/fusedrnn/ln_driver.h``): the row mean and variance are taken
inside the fused pointwise pass of each step. Configurations without a fused kernel (another
device, half precision, autocast) run the readable reference (``reference_torch``), with a
one-time warning.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import _ops, deploy, reference_torch
from .modules import (
    _STACK_FORWARDS,
    _fast_path_open,
    _FusedCellBase,
    _FusedRNNBase,
    _fx_leaf,
    _lean_call,
    _warn_fallback,
)

__all__ = ["LayerNormGRU", "LayerNormGRUCell", "LayerNormLSTM", "LayerNormLSTMCell"]

_FAMILY = {"LSTM": "ln_lstm", "GRU": "ln_gru"}
# (family, device type) pairs with a registered fused kernel, asked of the dispatcher once.
_KERNELS = frozenset(
    (fam, dev)
    for fam in _FAMILY.values()
    for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"), ("meta", "Meta"))
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedrnn::{fam}_stack", key)
    and torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedrnn::{fam}_stack_backward", key)
)


def _fused_ok(name: str, fam: str, weight: Tensor) -> bool:
    """Whether the fused LayerNorm op serves this call (else: the reference, warned once)."""
    dev, dtype = weight.device.type, weight.dtype
    why = None
    if torch._C._is_any_autocast_enabled():
        why = "autocast is enabled"
    elif dtype not in (torch.float32, torch.float64):
        why = f"the fused LayerNorm kernels run in float32 and float64, not {dtype}"
    elif (fam, dev) not in _KERNELS:
        why = f"no fused LayerNorm kernel on {dev}"
    if why is None:
        return True
    instead = "running the reference implementation, a Python loop over time steps"
    _warn_fallback(name, dev, dtype, why, instead)
    return False


def _ln_names(mode: str, suffix: str, bias: bool) -> list[str]:
    names = [f"layernorm_ih_weight{suffix}", f"layernorm_hh_weight{suffix}"]
    if mode == "LSTM":
        names.append(f"layernorm_c_weight{suffix}")
        if bias:
            names.append(f"layernorm_c_bias{suffix}")
    return names


def _reset_ln(module: nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters(recurse=False):
            if name.startswith("layernorm_"):
                (p.zero_() if "_c_bias" in name else p.fill_(1.0))


def reference_stack(fam: str, x, batch_sizes, h0, c0, weights, *, num_layers, bidirectional,
                    has_biases, dropout, train):  # fmt: skip
    """The LayerNorm stack by reference layers (a Python loop over time steps): what runs where
    no fused kernel does, and the eager baseline of the benchmarks. Dropout between layers is
    ``F.dropout`` (drawn as the fused op draws it)."""
    L, D = num_layers, 2 if bidirectional else 1
    per = len(weights) // (L * D)
    hs, cs = [], []
    for layer in range(L):
        outs = []
        for d in range(D):
            idx = layer * D + d
            lw = reference_torch.ln_layer_weights(
                fam, weights[idx * per : (idx + 1) * per], has_biases
            )
            kw = {"h0": h0[idx] if h0 is not None else None, "batch_sizes": batch_sizes}
            if fam == "ln_lstm":
                c = c0[idx] if c0 is not None else None
                out, h, c = reference_torch.ln_lstm_layer(x, **lw, c0=c, reverse=d == 1, **kw)
                cs.append(c)
            else:
                out, h = reference_torch.ln_gru_layer(x, **lw, reverse=d == 1, **kw)
            outs.append(out)
            hs.append(h)
        x = torch.cat(outs, -1) if D > 1 else outs[0]
        if layer + 1 < L and train and dropout > 0:
            x = F.dropout(x, dropout, True)
    return x, torch.stack(hs, 0), torch.stack(cs, 0) if cs else None


class _LayerNormRNNBase(_FusedRNNBase):
    _layernorm = True

    # proj_size: torch.nn's eighth positional argument, so that positional code written for
    # nn.LSTM / nn.GRU passes its 0 through; no projection exists here.
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None,
                 dtype=None) -> None:  # fmt: skip
        if proj_size != 0:
            raise ValueError(
                f"{type(self).__name__} has no proj_size (no projection), got {proj_size}"
                if mode == "LSTM"
                else "proj_size argument is only supported for LSTM, not RNN or GRU"
            )
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)  # fmt: skip
        G = 4 if mode == "LSTM" else 3
        kw = {"device": device, "dtype": dtype}
        all_weights = []
        for layer in range(num_layers):
            for d in range(2 if bidirectional else 1):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                for n in _ln_names(mode, suffix, bias):
                    width = G * hidden_size if ("_ih_" in n or "_hh_" in n) else hidden_size
                    self.register_parameter(n, nn.Parameter(torch.empty(width, **kw)))
                base = self._all_weights[len(all_weights)]
                all_weights.append(list(base) + _ln_names(mode, suffix, bias))
        self._all_weights = all_weights
        self._flat_weights_names = [n for names in all_weights for n in names]
        _reset_ln(self)
        self._init_flat_weights()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for name, weight in self.named_parameters(recurse=False):
            if not name.startswith("layernorm_"):
                nn.init.uniform_(weight, -stdv, stdv)
        _reset_ln(self)

    def flatten_parameters(self) -> None:
        """Nothing to flatten: the LayerNorm layers do not use cuDNN's weight buffer."""

    def _stack(self, x, batch_sizes, h0, c0):
        fam = _FAMILY[self.mode]
        kw = {"num_layers": self.num_layers, "bidirectional": self.bidirectional,
              "has_biases": self.bias, "dropout": self.dropout, "train": self.training}  # fmt: skip
        if not _fused_ok(type(self).__name__, fam, self.weight_ih_l0):
            return reference_stack(fam, x, batch_sizes, h0, c0, self._flat_weights, **kw)
        c0 = c0.contiguous() if c0 is not None else None
        h0 = h0.contiguous() if h0 is not None else None
        return _ops.stack(f"LN_{self.mode}", x.contiguous(), self._flat_weights, hx=h0, cx=c0,
                          batch_sizes=batch_sizes, **kw)  # fmt: skip

    def forward(self, input, hx=None):
        self._update_flat_weights()  # as torch.nn: parameters swapped by functional_call
        if _fast_path_open():  # as _FusedRNNBase.forward
            out = self._fast_step(input, hx)
            if out is not None:
                return out
        leaf = _fx_leaf(self, input, hx)
        if leaf is not None:
            return leaf
        if deploy.exporting_onnx(input):
            raise RuntimeError(
                f"{type(self).__name__} has no ONNX operator; export it with torch.export or "
                "AOTInductor (fusedrnn.deploy)"
            )
        return self._fused_forward(input, hx)

    def to_torch(self):
        raise TypeError(f"{type(self).__name__} has no torch.nn equivalent")

    def __prepare_scriptable__(self):
        raise TypeError(
            f"{type(self).__name__} cannot be scripted (torch.nn has no LayerNorm LSTM/GRU to "
            "stand in for it); use torch.compile or torch.export"
        )


_STACK_FORWARDS.append(_LayerNormRNNBase.forward)  # _C.stack_call may run it (modules.py)


class LayerNormLSTM(_LayerNormRNNBase):
    """LSTM with layer normalisation (Ba, Kiros & Hinton 2016), fused.

    Per step, with ``LN(v; w) = w * (v - mean(v)) / sqrt(var(v) + 1e-5)`` over the last
    dimension (biased variance)::

        a = LN(x W_ih^T; layernorm_ih_weight) + LN(h W_hh^T; layernorm_hh_weight) + b_ih + b_hh
        i, f, g, o = a.chunk(4)                     # torch.nn's gate order
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)  # the carried state (not normalised)
        h' = sigmoid(o) * tanh(LN(c'; layernorm_c_weight) + layernorm_c_bias)

    Arguments, inputs and outputs as :class:`torch.nn.LSTM` (no ``proj_size``)."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class LayerNormGRU(_LayerNormRNNBase):
    """GRU with layer normalisation (Ba, Kiros & Hinton 2016), fused.

    Per step, with ``LN`` as in :class:`LayerNormLSTM`::

        gi = LN(x W_ih^T; layernorm_ih_weight) + b_ih
        gh = LN(h W_hh^T; layernorm_hh_weight) + b_hh
        r = sigmoid(gi_r + gh_r); z = sigmoid(gi_z + gh_z)
        n = tanh(gi_n + r * gh_n); h' = (1 - z) * n + z * h

    Arguments, inputs and outputs as :class:`torch.nn.GRU`."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)


class _LayerNormCellBase(_FusedCellBase):
    _mode_name: str
    __call__ = _lean_call  # (no _C.cell_call: that runs the plain cells' op only)

    def _init_ln(self, device, dtype) -> None:
        kw = {"device": device, "dtype": dtype}
        G = 4 if self._mode_name == "LSTM" else 3
        for n in _ln_names(self._mode_name, "", self.bias):
            width = G * self.hidden_size if ("_ih_" in n or "_hh_" in n) else self.hidden_size
            self.register_parameter(n, nn.Parameter(torch.empty(width, **kw)))
        if self._mode_name == "LSTM" and not self.bias:
            self.register_parameter("layernorm_c_bias", None)
        _reset_ln(self)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_ln(self)

    def _mode(self) -> str:
        return self._mode_name

    def _weights(self) -> list[Tensor]:
        w = [self.weight_ih, self.weight_hh]
        if self.bias:
            w += [self.bias_ih, self.bias_hh]
        return w + [getattr(self, n) for n in _ln_names(self._mode_name, "", self.bias)]

    def _step(self, input, states):
        """One step: the stack op over a length-1 sequence."""
        fam = _FAMILY[self._mode_name]
        h0 = states[0].unsqueeze(0)
        c0 = states[1].unsqueeze(0) if len(states) > 1 else None
        kw = {"num_layers": 1, "bidirectional": False, "has_biases": self.bias,
              "dropout": 0.0, "train": self.training}  # fmt: skip
        x = input.unsqueeze(0)
        if _fused_ok(type(self).__name__, fam, self.weight_ih):
            _, h_n, c_n = _ops.stack(
                f"LN_{self._mode_name}", x, self._weights(), hx=h0, cx=c0, **kw
            )
        else:
            _, h_n, c_n = reference_stack(fam, x, None, h0, c0, self._weights(), **kw)
        return h_n[0], (c_n[0] if c_n is not None else None)

    def forward(self, input, hx=None):
        leaf = _fx_leaf(self, input, hx)
        if leaf is not None:
            return leaf
        nstate = 2 if self._mode_name == "LSTM" else 1
        input, states, is_batched = self._prepare(input, hx, nstate, self.weight_ih, self.weight_hh)
        h, c = self._step(input, states)
        if not is_batched:
            h = h.squeeze(0)
            c = c.squeeze(0) if c is not None else None
        return (h, c) if nstate == 2 else h

    def to_torch(self):
        raise TypeError(f"{type(self).__name__} has no torch.nn equivalent")

    def __prepare_scriptable__(self):
        raise TypeError(
            f"{type(self).__name__} cannot be scripted; use torch.compile or torch.export"
        )


class LayerNormLSTMCell(_LayerNormCellBase):
    """One step of :class:`LayerNormLSTM` (its equations), with the arguments, inputs and
    outputs of :class:`torch.nn.LSTMCell`; parameters ``layernorm_ih_weight``,
    ``layernorm_hh_weight`` ``[4H]``, ``layernorm_c_weight`` and ``layernorm_c_bias`` ``[H]``."""

    _mode_name = "LSTM"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)
        self._init_ln(device, dtype)


class LayerNormGRUCell(_LayerNormCellBase):
    """One step of :class:`LayerNormGRU` (its equations), with the arguments, inputs and
    outputs of :class:`torch.nn.GRUCell`; parameters ``layernorm_ih_weight`` and
    ``layernorm_hh_weight`` ``[3H]``."""

    _mode_name = "GRU"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)
        self._init_ln(device, dtype)
