"""Drop-in replacements for ``torch.nn.RNN / LSTM / GRU / RNNCell / LSTMCell / GRUCell``.

The modules subclass ``torch.nn.RNNBase`` / ``torch.nn.RNNCellBase``, so constructor arguments,
parameter names, shapes, initialisation, ``state_dict``, ``extra_repr`` and
``flatten_parameters`` are torch's own. Only ``forward`` differs: it runs every layer and
direction in one call of the fused stack op (``fusedrnn.stack``: Cell -> Layer -> Stack as
in ATen's ``RNN.cpp``, all in C++, with dropout between layers drawn as ``torch.nn`` draws
it), and mirrors ``torch.nn``'s argument checks, ``PackedSequence`` handling and
hidden-state permutations line by line.

A configuration without a fused kernel (a device whose dispatch key has no registered kernel,
e.g. CUDA tensors with a CPU-only build, or a dtype the backend does not dispatch, e.g.
half/bfloat16 on the CPU) or running under autocast falls back to ``torch.nn``'s
implementation, with a one-time warning.

Unlike ``torch.nn.LSTM`` (which Dynamo refuses to trace), these modules compile with
``torch.compile(fullgraph=True)``: the ops have fake kernels and registered autograd.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad as _forward_ad
from torch.nn.modules import module as _nn_module
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from . import _C, _ops, deploy

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "convert",
    "from_torch",
    "fused_supported",
]

# ---- which configurations the fused kernels serve ------------------------------------------
# Dtypes each backend dispatches (cpp/cpu/cpu_backend.h: float, double; the CUDA backend adds
# half and bfloat16 with float accumulation). Whether a backend exists at all is asked of the
# dispatcher, once, at import.
_BACKEND_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    "meta": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}
_OPS_BY_MODE = {
    mode: tuple(f"{fam}_{kind}" for kind in ("stack", "layer", "cell"))
    for mode, fam in (("RNN_TANH", "rnn_tanh"), ("RNN_RELU", "rnn_relu"), ("LSTM", "lstm"),
                      ("GRU", "gru"))
}  # fmt: skip


def _has_kernels(ops: tuple[str, ...], key: str) -> bool:
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedrnn::{op}", key)
        and torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedrnn::{op}_backward", key)
        for op in ops
    )


# (mode, device type) pairs with registered forward and backward kernels.
_KERNELS: frozenset[tuple[str, str]] = frozenset(
    (mode, dev)
    for mode, ops in _OPS_BY_MODE.items()
    for dev, key in _DISPATCH_KEYS.items()
    if _has_kernels(ops, key)
)
_warned: set[tuple[str, str, torch.dtype]] = set()


def fused_supported(mode: str, device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the fused kernels serve ``mode`` ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
    on ``device`` in ``dtype``."""
    dev = torch.device(device).type if not isinstance(device, torch.device) else device.type
    return (mode, dev) in _KERNELS and dtype in _BACKEND_DTYPES.get(dev, ())


_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, _ops))


def _user_stacklevel() -> int:
    """warnings.warn's stacklevel, for its caller, of the first frame outside fusedrnn and
    torch: the user's line, however deep the module call went (hooks, nn.Module.__call__)."""
    frame, level = sys._getframe(1), 1  # level 1: the caller, _warn_fallback
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def _warn_fallback(name: str, dev: str, dtype: torch.dtype, why: str, instead: str = "") -> None:
    """Warns once per (module, device, dtype) that the fused kernels do not serve a call: why,
    and what runs instead (default: torch.nn's implementation). It points at the user's line."""
    key = (name, dev, dtype)
    if key not in _warned:
        _warned.add(key)
        instead = instead or f"falling back to torch.nn.{name}'s implementation"
        warnings.warn(
            f"fusedrnn.{name}: {why}; {instead} (this warning is shown once)",
            stacklevel=_user_stacklevel(),
        )


def _use_fused(name: str, mode: str, weight: Tensor) -> bool:
    dtype = weight.dtype
    dev = "cpu" if weight.is_cpu else weight.device.type
    if deploy.exporting_onnx(weight):  # torch.nn's forward exports to ONNX (deploy.py)
        return False
    if torch._C._is_any_autocast_enabled():
        _warn_fallback(name, dev, dtype, "autocast is enabled")
        return False
    # fused_supported's test, without its torch.device(...) (~1.4 us of a ~20 us cell step)
    ok = (mode, dev) in _KERNELS and dtype in _BACKEND_DTYPES.get(dev, ())
    if not ok:
        why = f"no fused kernel for {dtype} on {dev}"
        if mode not in _OPS_BY_MODE:  # an edited `mode`: torch.nn's forward reads it its way
            why = f"mode {mode!r} has no fused kernel"
        _warn_fallback(name, dev, dtype, why)
    return ok


# Bound once: torch.compiler.is_compiling's attribute chain is ~60 ns a call (dynamo knows the
# function itself, so a traced forward still reads it as True).
_is_compiling = torch.compiler.is_compiling


def _fast_path_open() -> bool:
    """Whether a module may try ``_C.cell_step`` / ``_C.stack_step``
    (cpp/module_fast_path.cpp), which check the tensors and the rest themselves: not while
    torch.compile traces or forward AD's dual level is open (the Python path handles those).
    torch.func transforms, autocast and jit tracing (the TorchScript ONNX exporter) are checked
    in C++, where they cost ~10 ns instead of ~0.3 us of a ~7 us cell step; the dynamo ONNX
    exporter's calls run on fake tensors there (declined: not exact Tensors) or under Dynamo
    (is_compiling). Its flag is process-wide, so it is not read here: another thread's eager
    call keeps the fused path."""
    return not (_is_compiling() or _forward_ad._current_level >= 0)


# torch.nn.Module.__call__ as torch defines it (its class attribute may be patched, even before
# fusedrnn is imported).
_MODULE_CALL = nn.Module._wrapped_call_impl
_get_tracing_state = torch._C._get_tracing_state


def _lean_call(self, *args, **kwargs):
    """The fused modules' ``__call__``: straight to ``forward`` where ``nn.Module.__call__``
    would go straight to it (no hooks of the module, no global module hooks, no
    ``module.compile()``, no jit trace), else ``nn.Module.__call__`` itself; also while a
    tracer has patched ``nn.Module.__call__`` (torch.fx, export's module-stack tracking), so
    that the patched one sees the call. torch.compile traces this as it reads (the tracing
    state folds to None), into ``forward`` or ``nn.Module.__call__`` as eager would go.
    Module.__call__'s two Python frames and closure cells cost ~1 us of a ~4 us no-grad RNN
    cell call (B = 1, H = 64); these checks ~0.4 us."""
    if (
        self._compiled_call_impl is None
        and not (
            self._forward_hooks
            or self._forward_pre_hooks
            or self._backward_hooks
            or self._backward_pre_hooks
            or _nn_module._global_forward_hooks
            or _nn_module._global_forward_pre_hooks
            or _nn_module._global_backward_hooks
            or _nn_module._global_backward_pre_hooks
        )
        and nn.Module.__call__ is _MODULE_CALL
        and _get_tracing_state() is None
    ):
        return self.forward(*args, **kwargs)
    return nn.Module.__call__(self, *args, **kwargs)


def _cell_call(self, *args, **kwargs):
    """The cells' ``__call__``: ``_C.cell_call`` (cpp/module_call.cpp) tests in one C++ call
    what _lean_call and forward test for the plain eager call, and runs it (~1.5 us of Python
    of a ~3.4 us no-grad RNN cell step at B = 1, H = 64); None for any other call, which goes
    on down _lean_call. Not under torch.compile: dynamo reads is_compiling() as True and
    traces _lean_call."""
    if not kwargs and not _is_compiling():
        out = _C.cell_call(self, args)
        if out is not None:
            return out
    return _lean_call(self, *args, **kwargs)


def _stack_call(self, *args, **kwargs):
    """The sequence modules' ``__call__``: ``_C.stack_call`` (cpp/module_call.cpp) tests in one
    C++ call what _lean_call and forward test for the plain eager call, and runs it (~2.6 us
    of Python of a ~4.2 us no-grad T = 1 RNN layer call at B = 1, H = 8); None for any other
    call, which goes on down _lean_call. Not under torch.compile (as _cell_call)."""
    if not kwargs and not _is_compiling():
        out = _C.stack_call(self, args)
        if out is not None:
            return out
    return _lean_call(self, *args, **kwargs)


def _fx_leaf(module: nn.Module, input, hx):
    """Under torch.fx symbolic tracing (an fx Proxy as the input or a state): the call as one
    ``call_module`` node, as fx records torch.nn's RNN modules and cells (leaf modules there,
    as every torch.nn module), instead of tracing into a forward whose checks need real
    tensors. None otherwise. Read only where the one-call path declined the call."""
    for a in (input, *(hx if isinstance(hx, (tuple, list)) else (hx,))):
        if isinstance(a, torch.fx.Proxy):
            tracer = a.tracer
            args = (input,) if hx is None else (input, hx)
            return tracer.create_proxy("call_module", tracer.path_of_module(module), args, {})
    return None


class HiddenStateTypeError(TypeError, RuntimeError):
    """An LSTM's ``hx`` that is not two tensors: a TypeError (what nn.LSTMCell raises for a
    lone tensor) and a RuntimeError (what nn.LSTM raises for a lone tensor, "hx and cx should
    also be 3-D", and both for a tuple of other than two, "expects two hidden states"), so
    that code catching either behaves as with torch.nn."""


def _check_hx_type(name: str, hx, nstate: int) -> None:
    """torch.nn's type rule for ``hx``: a tuple (or list) ``(h, c)`` of two tensors for LSTMs,
    a tensor otherwise. A wrong type is a TypeError (torch's C++ entry points raise one; where
    torch.nn's own checks raise RuntimeError first, HiddenStateTypeError is both)."""
    if nstate == 2:
        ok = isinstance(hx, (tuple, list)) and len(hx) == 2
        ok = ok and all(isinstance(t, Tensor) for t in hx)
        if not ok:
            got = type(hx).__name__ if not isinstance(hx, (tuple, list)) else (
                f"a {type(hx).__name__} of {len(hx)}: " + ", ".join(type(t).__name__ for t in hx)
            )  # fmt: skip
            raise HiddenStateTypeError(
                f"{name}: expected hx to be a tuple (h_0, c_0) of two tensors, got {got}"
            )
    elif not isinstance(hx, Tensor):
        raise TypeError(f"{name}: expected hx to be a Tensor, got {type(hx).__name__}")


# ---- the stack: layers x directions over one time-major or packed input --------------------
# stack_step's kind per (LayerNorm, mode) (fusedrnn/module_fast_path.h).
_STACK_KIND = {(False, "RNN_TANH"): 0, (False, "RNN_RELU"): 1, (False, "LSTM"): 2,
               (False, "GRU"): 3, (True, "LSTM"): 4, (True, "GRU"): 5}  # fmt: skip


class _FusedRNNBase(nn.RNNBase):
    """Shared forward machinery of RNN, LSTM and GRU (not public)."""

    _torch_cls: type[nn.RNNBase]
    _layernorm = False  # the LayerNorm LSTM / GRU (layernorm.py)
    __call__ = _stack_call

    def _stack(self, x, batch_sizes, h0, c0):
        """``x``: ``[T, B, I]`` or packed ``[N, I]``; ``h0``/``c0``: ``[L*D, B, *]`` or None.
        Returns ``(output, h_n, c_n)`` (``c_n`` None unless LSTM): one op call runs every
        layer and direction, with dropout between layers in training mode."""
        # The backward op's fake kernel gives grad_input the input's strides while the kernel
        # returns a contiguous one; contiguous inputs keep compiled graphs (inductor asserts
        # strides) consistent. The kernels copy non-contiguous inputs anyway.
        return _ops.stack(
            self.mode,
            x.contiguous(),
            self._flat_weights,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            has_biases=self.bias,
            hx=h0.contiguous() if h0 is not None else None,
            cx=c0.contiguous() if c0 is not None else None,
            batch_sizes=batch_sizes,
            dropout=self.dropout,
            train=self.training,
        )

    def _fused_forward(self, input, hx):
        """torch.nn's forward preamble and epilogue around ``_stack``."""
        is_lstm = self.mode == "LSTM"
        name = type(self).__name__
        orig_input = input
        batch_sizes = None
        is_batched = True
        batch_dim = 0 if self.batch_first else 1
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            if hx is not None:
                _check_hx_type(name, hx, 2 if is_lstm else 1)
            if hx is None:
                self.check_input(input, batch_sizes)
            else:
                # Each batch of the hidden state should match the input sequence that
                # the user believes they are passing in.
                hx = self.permute_hidden(hx, sorted_indices)
                self.check_forward_args(input, hx, batch_sizes)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead"
                )
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            sorted_indices = None
            unsorted_indices = None
            if hx is not None:
                _check_hx_type(name, hx, 2 if is_lstm else 1)
                if is_lstm:
                    if is_batched:
                        if hx[0].dim() != 3 or hx[1].dim() != 3:
                            raise RuntimeError(
                                "For batched 3-D input, hx and cx should also be 3-D but got "
                                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                            )
                    else:
                        if hx[0].dim() != 2 or hx[1].dim() != 2:
                            raise RuntimeError(
                                "For unbatched 2-D input, hx and cx should also be 2-D but got "
                                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                            )
                        hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
                else:
                    if is_batched:
                        if hx.dim() != 3:
                            raise RuntimeError(
                                "For batched 3-D input, hx should also be 3-D but got "
                                f"{hx.dim()}-D tensor"
                            )
                    else:
                        if hx.dim() != 2:
                            raise RuntimeError(
                                "For unbatched 2-D input, hx should also be 2-D but got "
                                f"{hx.dim()}-D tensor"
                            )
                        hx = hx.unsqueeze(1)
                self.check_forward_args(input, hx, None)
            else:
                self.check_input(input, None)
            if self.batch_first:
                input = input.transpose(0, 1)
            if input.size(0) == 0:  # ATen's _rnn_impl check
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

        if hx is None:
            h0 = c0 = None
        elif is_lstm:
            h0, c0 = hx
        else:
            h0, c0 = hx, None
        output, h_n, c_n = self._stack(input, batch_sizes, h0, c0)
        hidden = (h_n, c_n) if is_lstm else h_n

        if isinstance(orig_input, PackedSequence):
            output_packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output_packed, self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = (h_n.squeeze(1), c_n.squeeze(1)) if is_lstm else h_n.squeeze(1)
        return output, hidden

    def _update_flat_weights(self) -> None:
        """torch.nn's, with its common case first: every weight still the one in
        ``_parameters`` (torch.func.functional_call and plain assignment put new ones there;
        torch.nn's check reads them through ``__getattr__``, ~5.6 us for four weights)."""
        p = self._parameters
        for name, ref in zip(self._flat_weights_names, self._flat_weights):
            if p.get(name) is not ref:
                super()._update_flat_weights()
                return

    def _fast_step(self, input, hx):
        """``_C.stack_step``'s result for the plain eager CPU call, else None."""
        kind = _STACK_KIND.get((self._layernorm, self.mode))
        if kind is None:  # an edited `mode`
            return None
        return _C.stack_step(kind, input, hx,
                             self._flat_weights, self.bias, self.num_layers, self.bidirectional,
                             float(self.dropout), self.training, self.batch_first,
                             self.input_size, self.hidden_size, self.proj_size)  # fmt: skip

    def forward(self, input, hx=None):
        self._update_flat_weights()  # as torch.nn: parameters swapped by functional_call
        if _fast_path_open():
            out = self._fast_step(input, hx)
            if out is not None:
                return out
        leaf = _fx_leaf(self, input, hx)
        if leaf is not None:
            return leaf
        if deploy.exporting_onnx(
            input
        ):  # (the fast step declines: it runs under jit tracing)  # ONNX's own LSTM/GRU/RNN operators (deploy.py)
            return deploy.onnx_forward(self, input, hx)
        weight = self.weight_ih_l0
        if not _use_fused(type(self).__name__, self.mode, weight):
            return self._torch_cls.forward(self, input, hx)
        return self._fused_forward(input, hx)

    def to_torch(self) -> nn.RNNBase:
        """A ``torch.nn`` copy of this module with the same (copied) weights."""
        return _rebuild(self, self._torch_cls, share=False)

    def __prepare_scriptable__(self):  # torch.jit.script (see _scripting.py)
        from ._scripting import prepare_scriptable

        return prepare_scriptable(self)


class RNN(_FusedRNNBase):
    """Drop-in for :class:`torch.nn.RNN` (same arguments, parameters and outputs) running on
    the fused ``rnn_layer`` op. See :class:`torch.nn.RNN` for the documentation."""

    _torch_cls = nn.RNN

    def __init__(self, *args, **kwargs):
        # nn.RNN.__init__, which cannot be borrowed (it calls the zero-argument super()).
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)


class LSTM(_FusedRNNBase):
    """Drop-in for :class:`torch.nn.LSTM` (same arguments incl. ``proj_size``, parameters and
    outputs) running on the fused ``lstm_layer`` op. See :class:`torch.nn.LSTM`."""

    _torch_cls = nn.LSTM

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class GRU(_FusedRNNBase):
    """Drop-in for :class:`torch.nn.GRU` (same arguments, parameters and outputs) running on
    the fused ``gru_layer`` op. See :class:`torch.nn.GRU`."""

    _torch_cls = nn.GRU

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)


# ---- cells -----------------------------------------------------------------------------------
def _check_cell_input(input: Tensor, input_size: int) -> None:
    # ATen's check_rnn_cell_forward_input
    if input.size(1) != input_size:
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(1)} expected {input_size}"
        )


def _check_cell_hidden(input: Tensor, hx: Tensor, hidden_size: int, label: str) -> None:
    # ATen's check_rnn_cell_forward_hidden
    if hx.dim() != 2:
        raise RuntimeError(f"hidden{label} must be 2-D after unsqueezing, got {hx.dim()}-D")
    if input.size(0) != hx.size(0):
        raise RuntimeError(
            f"Input batch size {input.size(0)} doesn't match hidden{label} batch size {hx.size(0)}"
        )
    if hx.size(1) != hidden_size:
        raise RuntimeError(
            f"hidden{label} has inconsistent hidden_size: got {hx.size(1)}, expected {hidden_size}"
        )


class _FusedCellBase(nn.RNNCellBase):
    _torch_cls: type[nn.RNNCellBase]
    _fast_kind: int | None = None  # cell_step's kind (fusedrnn/module_fast_path.h)
    __call__ = _cell_call

    def _mode(self) -> str:
        raise NotImplementedError

    def _prepare(self, input, hx, nstate: int, w_ih: Tensor, w_hh: Tensor):
        """torch's cell preamble. Returns ``(input, [states] or None, is_batched)``. The common
        case (batched input, states of the right shape) is checked with one shape comparison
        per tensor; anything else takes torch's checks, for its messages. Sizes are checked
        against the weights, as torch's cell kernels check them (an edited ``input_size`` or
        ``hidden_size`` attribute is not read, but for the zero state, as torch.nn)."""
        name = type(self).__name__
        dim = input.dim()
        if dim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {dim}D instead")
        states = None
        if hx is not None:
            _check_hx_type(name, hx, nstate)
            states = list(hx) if nstate == 2 else [hx]
            for idx, value in enumerate(states):
                if value.dim() not in (1, 2):
                    what = f"hx[{idx}]" if nstate == 2 else "hidden"
                    raise ValueError(
                        f"{name}: Expected {what} to be 1D or 2D, got {value.dim()}D instead"
                    )
        is_batched = dim == 2
        if not is_batched:
            input = input.unsqueeze(0)
            if states is not None:
                states = [s.unsqueeze(0) for s in states]
        if input.dtype != w_ih.dtype and not torch._C._is_any_autocast_enabled():
            raise RuntimeError(f"{name}: expected input dtype {w_ih.dtype}, got {input.dtype}")
        shape = input.shape
        if shape[1] != w_ih.shape[1]:
            _check_cell_input(input, w_ih.shape[1])
        if states is None:
            zeros = input.new_zeros(shape[0], self.hidden_size)
            states = [zeros] * nstate
        else:
            hidden = w_hh.shape[1]
            want = (shape[0], hidden)
            for i, s in enumerate(states):
                if s.shape != want:
                    _check_cell_hidden(input, s, hidden, "" if nstate == 1 else str(i))
        # Contiguous operands: see _FusedRNNBase._stack (e.g. ``cell(x[:, t], h)``).
        return input.contiguous(), [s.contiguous() for s in states], is_batched

    def forward(self, input, hx=None):
        # Parameters read from _parameters (as nn.Module.__getattr__ does, and where
        # torch.func.functional_call puts its tensors), once: each attribute lookup through
        # __getattr__ costs ~0.7 us of a ~20 us step. A weight that is not there is computed
        # or held elsewhere (a parametrization's property, or the plain tensor attribute that
        # weight_norm's and pruning's forward pre-hooks set): read by attribute, as torch.nn.
        p = self._parameters
        try:
            w_ih, w_hh, b_ih, b_hh = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        except KeyError:
            w_ih, w_hh, b_ih, b_hh = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        kind = self._fast_kind
        if kind is not None and _fast_path_open():
            # The plain eager CPU call in one C++ call (~4 us at B = 1, against ~11 us for the
            # path below); None when the call is anything else.
            out = _C.cell_step(kind, self.input_size, self.hidden_size, input, hx, w_ih, w_hh,
                               b_ih, b_hh)  # fmt: skip
            if out is not None:
                return out
        leaf = _fx_leaf(self, input, hx)
        if leaf is not None:
            return leaf
        if not _use_fused(type(self).__name__, self._mode(), w_ih):
            return self._torch_cls.forward(self, input, hx)
        return self._fused_forward(input, hx, w_ih, w_hh, b_ih, b_hh)

    def to_torch(self) -> nn.RNNCellBase:
        """A ``torch.nn`` copy of this cell with the same (copied) weights."""
        return _rebuild(self, self._torch_cls, share=False)

    def __prepare_scriptable__(self):  # torch.jit.script (see _scripting.py)
        from ._scripting import prepare_scriptable

        return prepare_scriptable(self)


_RNN_CELL_KIND = {"tanh": 0, "relu": 1}  # cell_step's kinds (fusedrnn/module_fast_path.h)


class RNNCell(_FusedCellBase):
    """Drop-in for :class:`torch.nn.RNNCell` running on the fused ``rnn_cell`` op."""

    _torch_cls = nn.RNNCell
    nonlinearity: str

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _mode(self) -> str:
        return "RNN_RELU" if self.nonlinearity == "relu" else "RNN_TANH"

    @property
    def _fast_kind(self) -> int | None:
        return _RNN_CELL_KIND.get(self.nonlinearity)  # None: unknown (the Python path raises)

    def _fused_forward(self, input, hx, w_ih, w_hh, b_ih, b_hh):
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        input, (h,), is_batched = self._prepare(input, hx, 1, w_ih, w_hh)
        ret = _ops.rnn_cell(input, h, w_ih, w_hh, b_ih, b_hh, nonlinearity=self.nonlinearity)
        return ret if is_batched else ret.squeeze(0)


class LSTMCell(_FusedCellBase):
    """Drop-in for :class:`torch.nn.LSTMCell` running on the fused ``lstm_cell`` op."""

    _torch_cls = nn.LSTMCell
    _fast_kind = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def _mode(self) -> str:
        return "LSTM"

    def _fused_forward(self, input, hx, w_ih, w_hh, b_ih, b_hh):
        input, (h, c), is_batched = self._prepare(input, hx, 2, w_ih, w_hh)
        hy, cy = _ops.lstm_cell(input, h, c, w_ih, w_hh, b_ih, b_hh)
        return (hy, cy) if is_batched else (hy.squeeze(0), cy.squeeze(0))


class GRUCell(_FusedCellBase):
    """Drop-in for :class:`torch.nn.GRUCell` running on the fused ``gru_cell`` op."""

    _torch_cls = nn.GRUCell
    _fast_kind = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def _mode(self) -> str:
        return "GRU"

    def _fused_forward(self, input, hx, w_ih, w_hh, b_ih, b_hh):
        input, (h,), is_batched = self._prepare(input, hx, 1, w_ih, w_hh)
        ret = _ops.gru_cell(input, h, w_ih, w_hh, b_ih, b_hh)
        return ret if is_batched else ret.squeeze(0)


# ---- conversion --------------------------------------------------------------------------
_TO_FUSED: dict[type, type] = {
    nn.RNN: RNN,
    nn.LSTM: LSTM,
    nn.GRU: GRU,
    nn.RNNCell: RNNCell,
    nn.LSTMCell: LSTMCell,
    nn.GRUCell: GRUCell,
}


# What _C.cell_call and _C.stack_call compare with (cpp/module_call.cpp): torch.nn.Module and
# its __call__ as found here, the cells' forward and RNNCell's _fast_kind property, the stacks'
# forwards (layernorm.py adds the LayerNorm stacks'), _fast_step and _update_flat_weights, and
# the modules whose globals they read on each call.
_STACK_FORWARDS = [_FusedRNNBase.forward]
_C.module_call_init(nn.Module, _MODULE_CALL, _FusedCellBase.forward,
                    RNNCell.__dict__["_fast_kind"], _STACK_FORWARDS, _FusedRNNBase._fast_step,
                    _FusedRNNBase._update_flat_weights, _nn_module, _forward_ad,
                    deploy._onnx_flags)  # fmt: skip


def _rebuild(m: nn.Module, cls: type, share: bool) -> nn.Module:
    """``m`` as an instance of ``cls`` (a ``torch.nn`` class and its fusedrnn twin share
    attributes): the same module state under the other class when ``share`` (parameters,
    buffers, submodules, hooks and parametrizations: the very objects, as if ``m``'s class had
    changed), else a deep copy of it (``copy.deepcopy``: new parameters, copied hooks). A
    module parametrized by ``torch.nn.utils.parametrize`` keeps its parametrizations, under
    torch's ``Parametrized<cls>`` class; weight_norm's and pruning's pre-hooks carry over
    with the other hooks. Nothing is initialised, so the global RNG is not used."""
    src = m if share else _deepcopy(m)
    new = object.__new__(_class_like(src, cls))
    new.__dict__.update(src.__dict__)
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()  # its own list (the module's __setattr__ updates it in place)
    return new


def _deepcopy(m: nn.Module) -> nn.Module:
    """``copy.deepcopy(m)``, where tensors computed from parameters (a parametrized weight
    cached in an RNN's flat weight list, weight_norm's or pruning's weight attribute: graph
    nodes, which deepcopy refuses) are copied as detached values; the copy's next forward
    computes them again from its own parameters."""
    memo: dict[int, object] = {}
    for mod in m.modules():
        for value in vars(mod).values():
            for t in value if isinstance(value, list) else (value,):
                if isinstance(t, Tensor) and not t.is_leaf:
                    memo[id(t)] = t.detach().clone()
    return copy.deepcopy(m, memo)


def _class_like(m: nn.Module, cls: type) -> type:
    """``cls``, or for a module parametrized by ``torch.nn.utils.parametrize`` the subclass of
    ``cls`` holding the same properties (and serialization rules) as ``m``'s injected class."""
    if not parametrize.is_parametrized(m):
        return cls
    skip = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"}
    attrs = {k: v for k, v in vars(type(m)).items() if k not in skip}
    return type(f"Parametrized{cls.__name__}", (cls,), attrs)


def _fused_class(module: nn.Module) -> type | None:
    """The fusedrnn class for an exact torch.nn RNN class, seen through parametrize's class."""
    return _TO_FUSED.get(parametrize.type_before_parametrizations(module))


def from_torch(module: nn.Module) -> nn.Module:
    """A fusedrnn copy (``copy.deepcopy``) of a ``torch.nn`` RNN/LSTM/GRU or cell: the same
    (copied) weights, device, dtype, training mode, hooks and parametrizations."""
    cls = _fused_class(module)
    if cls is None:
        raise TypeError(
            f"from_torch expects one of {', '.join('torch.nn.' + t.__name__ for t in _TO_FUSED)}"
            f", got {type(module).__name__}"
        )
    return _rebuild(module, cls, share=False)


def convert(model: nn.Module) -> nn.Module:
    """Swap every ``torch.nn.RNN/LSTM/GRU/RNNCell/LSTMCell/GRUCell`` inside ``model`` for its
    fusedrnn equivalent, in place, and return ``model``.

    The new modules hold the very same ``Parameter`` objects (so device, dtype, values and an
    optimizer built before the conversion carry over), buffers, hooks (a handle still removes
    its hook; weight_norm's and pruning's pre-hooks are hooks) and parametrizations
    (``torch.nn.utils.parametrize``), and the same training mode. Only the exact torch classes
    (parametrized or not) are swapped, not subclasses (whose ``forward`` may be customised).
    If ``model`` itself is such a module, its replacement is returned."""
    memo: dict[int, nn.Module] = {}

    def swap(m: nn.Module) -> nn.Module:
        cls = _fused_class(m)
        if cls is None:
            return m
        if id(m) not in memo:  # a module shared in several places stays shared
            memo[id(m)] = _rebuild(m, cls, share=True)
        return memo[id(m)]

    def visit(parent: nn.Module) -> None:
        # _modules, not named_children(): the latter skips a module's second occurrence.
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = swap(child)
            if new is not child:
                setattr(parent, name, new)
            else:
                visit(child)

    root = swap(model)
    if root is model:
        visit(model)
    return root
