"""Taking models with fusedrnn layers out of Python: weights-only loading and ONNX export.

**weights_only loading.** Importing fusedrnn declares its module classes safe for
``torch.load(weights_only=True)`` (``torch.serialization.add_safe_globals``), so a whole model
saved with ``torch.save(model)`` loads like one made of ``torch.nn`` layers. They are plain
``nn.RNNBase`` / ``nn.RNNCellBase`` subclasses: unpickling one only runs torch.nn's own
``__setstate__`` (no ``__reduce__`` or ``__setstate__`` of fusedrnn's), exactly as for the
``torch.nn.LSTM`` & co. that a ``safe_globals`` list already admits. :func:`safe_globals` returns
the same classes for an explicit list, e.g.
``torch.serialization.safe_globals([MyModel, nn.Linear, *fusedrnn.safe_globals()])``.

**ONNX.** While ``torch.onnx.export`` traces a model, the RNN/LSTM/GRU stacks emit the standard
ONNX ``RNN`` / ``LSTM`` / ``GRU`` operators (one per layer, both directions in one node) instead
of the fused custom ops, which no ONNX runtime knows:

- dynamo exporter (``dynamo=True``, the default): :func:`onnx_forward` builds the nodes with
  ``torch.onnx.ops.symbolic_multi_out``, converting torch's gate order and bias layout to
  ONNX's (LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h with ``linear_before_reset=1``; RNN
  ``activations`` Tanh or Relu);
- TorchScript exporter (``dynamo=False``): torch.nn's own forward runs, which that exporter maps
  to the same operators.

The cells run torch.nn's forward under both exporters (ONNX has no single-step cell operator:
they export as Gemm and pointwise nodes, as ``torch.nn``'s cells do). LSTM projections
(``proj_size > 0``) have no ONNX equivalent and raise ``ValueError``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake
from torch.nn.utils.rnn import PackedSequence

__all__ = ["safe_globals", "exporting_onnx", "onnx_forward"]


def safe_globals() -> list[type]:
    """The fusedrnn classes a whole pickled model may reference, for
    ``torch.serialization.safe_globals`` / ``add_safe_globals`` (fusedrnn registers them itself
    at import; this list is for explicit allow-lists and after ``clear_safe_globals()``)."""
    from . import layernorm as ln
    from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

    return [RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell, ln.LayerNormLSTM, ln.LayerNormGRU,
            ln.LayerNormLSTMCell, ln.LayerNormGRUCell]  # fmt: skip


try:  # the dynamo exporter's flag (torch >= 2.6); see exporting_onnx
    from torch.onnx._internal.exporter import _flags as _onnx_flags
except ImportError:  # pragma: no cover - older or rearranged torch: the public check only
    _onnx_flags = None


def dynamo_onnx_exporting(x=None) -> bool:
    """Whether the dynamo ONNX exporter is tracing this call (exporting_onnx's first half).
    Its flag is process-wide, set around the whole export: another thread's eager call in the
    meantime must not take the ONNX path (it returned placeholder values). The exporting
    thread's call is either traced by Dynamo (strict capture: is_dynamo_compiling, False in
    eager) or runs on fake tensors (non-strict); `x` is the call's input or a weight."""
    if not getattr(_onnx_flags, "_is_onnx_exporting", False):
        return False
    if torch.compiler.is_dynamo_compiling():
        return True
    if isinstance(x, PackedSequence):
        x = x.data
    return isinstance(x, torch.Tensor) and is_fake(x)


def exporting_onnx(x=None) -> bool:
    """Whether ``torch.onnx.export`` (either exporter) is tracing the current call (`x`: its
    input or a weight, see dynamo_onnx_exporting)."""
    # Called on every forward: the flags are read directly (torch.onnx.is_in_onnx_export() costs
    # ~5 us, it imports on each call). The TorchScript exporter always runs under jit tracing.
    # Dynamo folds is_in_onnx_export() to False, so under the dynamo exporter's strict (Dynamo)
    # capture the fused ops would be traced: the flag that exporter sets around the whole export
    # is read instead, as a (guarded) constant.
    if dynamo_onnx_exporting(x):
        return True
    return torch._C._get_tracing_state() is not None and torch.onnx.is_in_onnx_export()


# ONNX's gate order as indices into torch's gate chunks (ONNX LSTM/GRU/RNN operator specs).
_ONNX_GATES = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN_TANH": (0,), "RNN_RELU": (0,)}
_ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def onnx_forward(module: nn.RNNBase, input, hx=None):
    """``module.forward`` while ``torch.onnx.export`` traces it (see the module docstring)."""
    if getattr(module, "proj_size", 0) > 0:
        raise ValueError(
            f"fusedrnn.{type(module).__name__}: ONNX export of an LSTM with proj_size="
            f"{module.proj_size} is not possible: the ONNX LSTM operator has no projection "
            "(proj_size must be 0 to export)"
        )
    symbolic = getattr(getattr(torch.onnx, "ops", None), "symbolic_multi_out", None)
    if torch.jit.is_tracing() or isinstance(input, PackedSequence) or symbolic is None:
        # The TorchScript exporter maps torch.nn's aten::lstm/gru/rnn_* to the ONNX operators;
        # packed input, and torch < 2.8 (no torch.onnx.ops), go the way they go for torch.nn.
        return module._torch_cls.forward(module, input, hx)
    return _symbolic_forward(module, input, hx)


def _symbolic_forward(module: nn.RNNBase, input: Tensor, hx):
    """torch.nn's forward preamble and epilogue around ONNX nodes (dynamo exporter)."""
    is_lstm = module.mode == "LSTM"
    if input.dim() not in (2, 3):
        raise ValueError(
            f"{type(module).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead"
        )
    is_batched = input.dim() == 3
    batch_dim = 0 if module.batch_first else 1
    if not is_batched:
        input = input.unsqueeze(batch_dim)
        if hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if is_lstm else hx.unsqueeze(1)
    if hx is None:
        module.check_input(input, None)
    else:
        module.check_forward_args(input, hx, None)
    x = input.transpose(0, 1) if module.batch_first else input
    num_dir = 2 if module.bidirectional else 1
    if hx is None:
        zeros = x.new_zeros(module.num_layers * num_dir, x.size(1), module.hidden_size)
        hx = (zeros, zeros) if is_lstm else zeros
    h0, c0 = hx if is_lstm else (hx, None)

    hs, cs = [], []
    for layer in range(module.num_layers):
        rows = slice(layer * num_dir, (layer + 1) * num_dir)
        x, h_n, c_n = _onnx_layer(module, layer, x, h0[rows], c0[rows] if is_lstm else None)
        hs.append(h_n)
        cs.append(c_n)
        if module.dropout != 0 and module.training and layer < module.num_layers - 1:
            x = F.dropout(x, module.dropout, training=True)
    h_n = torch.cat(hs, 0)
    hidden = (h_n, torch.cat(cs, 0)) if is_lstm else h_n
    output = x.transpose(0, 1) if module.batch_first else x
    if not is_batched:
        output = output.squeeze(batch_dim)
        hidden = tuple(h.squeeze(1) for h in hidden) if is_lstm else hidden.squeeze(1)
    return output, hidden


def _onnx_layer(module: nn.RNNBase, layer: int, x: Tensor, h0: Tensor, c0: Tensor | None):
    """One layer, all directions, as one ONNX node. ``x``: ``[T, B, I]``; ``h0``/``c0``:
    ``[D, B, H]``. Returns ``(output [T, B, D*H], h_n [D, B, H], c_n or None)``."""
    mode, H = module.mode, module.hidden_size
    gates = _ONNX_GATES[mode]
    num_dir = 2 if module.bidirectional else 1
    W, R, B = [], [], []
    for suffix in ("", "_reverse")[:num_dir]:

        def param(kind: str, suffix=suffix) -> Tensor:
            p = getattr(module, f"{kind}_l{layer}{suffix}")
            return torch.cat([p[g * H : (g + 1) * H] for g in gates], 0)

        W.append(param("weight_ih"))
        R.append(param("weight_hh"))
        if module.bias:
            B.append(torch.cat([param("bias_ih"), param("bias_hh")], 0))
    attrs: dict = {"hidden_size": H, "direction": "bidirectional" if num_dir == 2 else "forward"}
    if mode == "GRU":
        attrs["linear_before_reset"] = 1  # torch applies r to (W_hn h + b_hn)
    elif mode != "LSTM":
        attrs["activations"] = ["Relu" if mode == "RNN_RELU" else "Tanh"] * num_dir
    inputs = [x, torch.stack(W), torch.stack(R), torch.stack(B) if B else None, None, h0]
    T, batch = x.shape[0], x.shape[1]
    state_shape = [num_dir, batch, H]
    shapes = [[T, num_dir, batch, H], state_shape]
    if c0 is not None:
        inputs.append(c0)
        shapes.append(state_shape)
    outs = torch.onnx.ops.symbolic_multi_out(
        _ONNX_OP[mode], inputs, attrs, dtypes=[x.dtype] * len(shapes), shapes=shapes
    )
    # Y: [T, D, B, H] -> [T, B, D*H] (directions side by side, as torch concatenates them)
    y = outs[0].permute(0, 2, 1, 3).reshape(T, batch, num_dir * H)
    return y, outs[1], outs[2] if c0 is not None else None
