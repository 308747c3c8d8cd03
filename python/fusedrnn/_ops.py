"""Python glue of the fused ops: loads ``fusedrnn._C``, registers fake (meta) kernels and
autograd for every forward op, and offers typed wrappers.

Layer ops run one direction of one layer over a whole sequence. ``input`` is time-major
``[T, B, I]``, or packed data ``[N, I]`` with ``batch_sizes`` (``PackedSequence.batch_sizes``:
int64, CPU, non-increasing). Weights use ``torch.nn``'s layout and gate order. The backward
ops are ops too (``torch.ops.fusedrnn.*_backward``), so autograd, ``torch.compile`` and
``torch.library.opcheck`` see every step.
"""

from __future__ import annotations

import inspect
import numbers

import torch

from . import (
    _C,  # noqa: F401  (loading the library registers the ops)
    _autograd,
    _double_backward,
)

ops = torch.ops.fusedrnn

RNN_FAMILIES = ("rnn_tanh", "rnn_relu")
_WS = {"lstm": 5, "gru": 4}


def _empty0(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_empty((0,))


def _fake_batch(input, batch_sizes, h0):
    if h0 is not None:
        return h0.shape[0]
    if batch_sizes is None:
        return input.shape[1]
    # Packed input without an initial state: B = batch_sizes[0], a value, not a shape.
    return torch.library.get_ctx().new_dynamic_size()


def _out_rows(input, batch_sizes):
    return input.shape[:1] if batch_sizes is not None else input.shape[:2]


# ---- fake kernels ---------------------------------------------------------------------------
def _same_device(op: str, names: str, args) -> None:
    """The real kernels check this; a fake kernel runs instead of them when any argument is
    on the meta device, so it must refuse mixed devices itself."""
    names = [n.strip() for n in names.split(",")]
    ref = next((a for n, a in zip(names, args) if n == "input"), None)
    for n, a in zip(names, args):
        if n == "batch_sizes" and isinstance(a, torch.Tensor):
            # The CPU's, as PackedSequence's: on meta it would pick this fake kernel for a
            # real call (uninitialised results), so only an all-meta call may have it there.
            if a.device.type == "meta" and ref.device.type != "meta":
                raise RuntimeError(
                    f"fusedrnn::{op}: expected batch_sizes as a CPU int64 tensor (as "
                    f"PackedSequence's), got one on {a.device}"
                )
            continue
        for k, t in enumerate(a) if isinstance(a, (list, tuple)) else [(None, a)]:
            if isinstance(t, torch.Tensor) and t.device != ref.device:
                what = n if k is None else f"{n}[{k}]"
                raise RuntimeError(
                    f"fusedrnn::{op}: expected {what} on device {ref.device} like input, "
                    f"got {t.device}"
                )


def register_fake(op: str):
    """register_fake plus the device check above."""

    def deco(fn):
        names = ",".join(inspect.signature(fn).parameters)

        def checked(*args):
            _same_device(op, names, args)
            return fn(*args)

        checked.__signature__ = inspect.signature(fn)
        torch.library.register_fake(f"fusedrnn::{op}")(checked)
        return fn

    return deco


def _register_rnn_fakes(fam: str) -> None:
    @register_fake(f"{fam}_layer")
    def _(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        H = w_hh.shape[1]
        B = _fake_batch(input, batch_sizes, h0)
        return input.new_empty((*_out_rows(input, batch_sizes), H)), input.new_empty((B, H))

    @register_fake(f"{fam}_cell")
    def _(input, hx, w_ih, w_hh, b_ih, b_hh):
        return input.new_empty((input.shape[0], w_hh.shape[1]))


for _fam in RNN_FAMILIES:
    _register_rnn_fakes(_fam)


@register_fake("lstm_layer")
def _(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_workspace=True):
    H = w_ih.shape[0] // 4
    P = w_hh.shape[1]
    B = _fake_batch(input, batch_sizes, h0 if h0 is not None else c0)
    rows = _out_rows(input, batch_sizes)
    n = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
    return (
        input.new_empty((*rows, P)),
        input.new_empty((B, P)),
        input.new_empty((B, H)),
        input.new_empty((n if need_workspace else 0, 5 * H)),
    )


@register_fake("lstm_cell")
def _(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    H = w_ih.shape[0] // 4
    B = input.shape[0]
    return input.new_empty((B, H)), input.new_empty((B, H)), input.new_empty((B, 5 * H))


@register_fake("gru_layer")
def _(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, need_workspace=True):
    H = w_hh.shape[1]
    B = _fake_batch(input, batch_sizes, h0)
    n = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
    return (
        input.new_empty((*_out_rows(input, batch_sizes), H)),
        input.new_empty((B, H)),
        input.new_empty((n if need_workspace else 0, 4 * H)),
    )


@register_fake("gru_cell")
def _(input, hx, w_ih, w_hh, b_ih, b_hh):
    H = w_hh.shape[1]
    return input.new_empty((input.shape[0], H)), input.new_empty((input.shape[0], 4 * H))


_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "ln_lstm": 4, "ln_gru": 3}


def _ws_cols(fam: str, H: int) -> int:
    """Workspace columns per row (cell_math.h; LayerNorm: ln_step_args.h ln_ws_cols)."""
    if fam in ("ln_lstm", "ln_gru"):  # padded to whole 64-byte lines (ln_step_args.h)
        return ((14 * H + 3 if fam == "ln_lstm" else 10 * H + 2) + 15) // 16 * 16
    return {"lstm": 5, "gru": 4}.get(fam, 0) * H


def _register_stack_fakes(fam: str) -> None:

    @register_fake(f"{fam}_stack")
    def _(input, batch_sizes, hx, cx, weights, has_biases, num_layers, bidirectional, dropout,
          train, need_workspace=True):  # fmt: skip
        L, D = num_layers, 2 if bidirectional else 1
        H, P = weights[0].shape[0] // _GATES[fam], weights[1].shape[1]
        state = hx if hx is not None else cx
        B = state.shape[1] if state is not None else _fake_batch(input, batch_sizes, None)
        rows = _out_rows(input, batch_sizes)
        n = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
        drop = train and dropout > 0 and L > 1
        saved = []  # layout and the empty slots: cpp/include/fusedrnn/stack_driver.h
        for layer in range(L):
            for _d in range(D):
                top = layer == L - 1 and D == 1
                saved.append(_empty0(input) if top else input.new_empty((*rows, P)))
                saved.append(input.new_empty((n if need_workspace else 0, _ws_cols(fam, H))))
            if layer < L - 1:
                x_next = drop or D > 1
                saved.append(input.new_empty((*rows, D * P)) if x_next else _empty0(input))
                saved.append(input.new_empty((*rows, D * P)) if drop else _empty0(input))
        c_n = input.new_empty((L * D, B, H)) if fam in ("lstm", "ln_lstm") else _empty0(input)
        return input.new_empty((*rows, D * P)), input.new_empty((L * D, B, P)), c_n, saved


STACK_FAMILIES = (*RNN_FAMILIES, "lstm", "gru")
LN_FAMILIES = ("ln_lstm", "ln_gru")  # LayerNorm LSTM / GRU: stack ops only
for _fam in (*STACK_FAMILIES, *LN_FAMILIES):
    _register_stack_fakes(_fam)


def _register_backward_fake(name: str) -> None:
    """Every backward op, from its schema: ``grad_<x>`` is shaped like the forward input
    ``<x>`` (a list of them for ``weights``); an absent input, or the input / hx when
    ``input_grad`` / ``hx_grad`` is false, gets an empty [0] tensor."""
    schema = getattr(ops, name).default._schema
    defaults = {a.name: a.default_value for a in schema.arguments if a.has_default_value()}
    wanted = [r.name[len("grad_") :] for r in schema.returns]

    def fake(*args):
        a = {**defaults, **dict(zip([x.name for x in schema.arguments], args))}
        out = []
        for n in wanted:
            v = a.get(n)
            if isinstance(v, (list, tuple)):
                out.append([torch.empty_like(w) for w in v])
            elif v is None or not a.get(f"{n}_grad", True):  # input_grad, hx_grad
                out.append(_empty0(a["input"]))
            else:
                out.append(v.new_empty(v.shape))
        return tuple(out)

    fake.__signature__ = inspect.Signature(
        [
            inspect.Parameter(x.name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for x in schema.arguments
        ]
    )
    register_fake(name)(fake)


for _fam in STACK_FAMILIES:
    for _kind in ("layer", "cell", "stack"):
        _register_backward_fake(f"{_fam}_{_kind}_backward")
for _fam in LN_FAMILIES:
    _register_backward_fake(f"{_fam}_stack_backward")


# ---- autograd (derived from the schemas, see _autograd.py) ------------------------------------
FORWARD_OPS = tuple(
    f"{fam}_{kind}" for fam in STACK_FAMILIES for kind in ("layer", "cell", "stack")
) + tuple(f"{fam}_stack" for fam in LN_FAMILIES)
for _name in FORWARD_OPS:
    _autograd.register_forward(_name)
_double_backward.register_all(FORWARD_OPS)


# ---- typed wrappers ------------------------------------------------------------------------
def _needs_grad(*tensors) -> bool:
    """Whether autograd may record this call (so the forward must save its workspace). Under
    jit tracing always: the trace keeps need_workspace as a constant, and a graph traced
    under no_grad may run with gradients (as torch.nn's traced aten::lstm does)."""
    if _autograd._transforms_active() or torch._C._get_tracing_state() is not None:
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _below_autograd(need_grad: bool) -> bool:
    """Whether a call may skip the autograd layer: it records nothing (no input needs a
    gradient, or grad mode is off), runs eagerly, and no forward-AD level or torch.func
    transform is open (tangents and batched tensors need the Autograd kernel). The Python
    Autograd kernel costs ~6 us per call even when it only passes the call on, a third of a
    single-step cell call (bench ``stream``)."""
    return (
        not need_grad and not _autograd._transforms_active() and not torch.compiler.is_compiling()
    )


# Ops with a C++ autograd entry point ({name}_autograd), for the modules' training steps.
_CPP_AUTOGRAD = frozenset(
    [f"{fam}_{kind}" for fam in STACK_FAMILIES for kind in ("stack", "cell")]
    + [f"{fam}_stack" for fam in LN_FAMILIES]
)


def _call(op, need_grad: bool, *args):
    if torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None:
        # jit tracing records the op itself, whose Autograd kernel decides at run time (the
        # C++ autograd entry or a call below autograd would be recorded as it ran here)
        return op(*args)
    if _below_autograd(need_grad):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    name = op._qualified_op_name[len("fusedrnn::") :]
    if name in _CPP_AUTOGRAD and not _autograd._transforms_active():
        # autograd in C++ (cpp/autograd.cpp): no Python on the training step
        fast = getattr(ops, f"{name}_autograd")
        return fast(*args[:-1]) if name.endswith("_stack") else fast(*args)  # need_workspace
    # Straight to the op's autograd.Function: no dispatcher round trip into the Python
    # Autograd kernel, and under torch.func the only way (see _autograd.register).
    return _autograd.apply(name, *args)


def _rnn_family(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return f"rnn_{nonlinearity}"


def rnn_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", h0=None,
              batch_sizes=None, reverse=False):  # fmt: skip
    """Elman RNN over a sequence. Returns ``(output, h_n)``."""
    op = getattr(ops, f"{_rnn_family(nonlinearity)}_layer")
    need = _needs_grad(input, h0, w_ih, w_hh, b_ih, b_hh)
    return _call(op, need, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse)


def lstm_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None, h0=None, c0=None,
               batch_sizes=None, reverse=False):  # fmt: skip
    """LSTM over a sequence (``w_hr``: projection ``[P, H]``). Returns ``(output, h_n, c_n)``."""
    need = _needs_grad(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    out, h_n, c_n, _ = _call(ops.lstm_layer, need, input, batch_sizes, h0, c0, w_ih, w_hh, b_ih,
                             b_hh, w_hr, reverse, need)  # fmt: skip
    return out, h_n, c_n


def gru_layer(input, w_ih, w_hh, b_ih=None, b_hh=None, *, h0=None, batch_sizes=None,
              reverse=False):  # fmt: skip
    """GRU over a sequence. Returns ``(output, h_n)``."""
    need = _needs_grad(input, h0, w_ih, w_hh, b_ih, b_hh)
    out, h_n, _ = _call(ops.gru_layer, need, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh,
                        reverse, need)  # fmt: skip
    return out, h_n


_STACK_OPS = {"RNN_TANH": "rnn_tanh_stack", "RNN_RELU": "rnn_relu_stack", "LSTM": "lstm_stack",
              "GRU": "gru_stack", "LN_LSTM": "ln_lstm_stack", "LN_GRU": "ln_gru_stack"}  # fmt: skip


def stack(mode, input, weights, *, num_layers=1, bidirectional=False, has_biases=True, hx=None,
          cx=None, batch_sizes=None, dropout=0.0, train=False):  # fmt: skip
    """Every layer and direction of an ``RNN`` / ``LSTM`` / ``GRU`` in one op call.

    ``mode``: "RNN_TANH", "RNN_RELU", "LSTM", "GRU", or "LN_LSTM" / "LN_GRU" (LayerNorm,
    ``fusedrnn.LayerNormLSTM``); ``weights``: torch.nn's flat list (``module._flat_weights``;
    LayerNorm: per layer and direction the LayerNorm weights after the biases); ``hx`` / ``cx``:
    ``[L*D, B, *]``; dropout between layers when ``train``. Returns ``(output, h_n, c_n)``
    (``c_n`` None unless an LSTM)."""
    name = _STACK_OPS.get(mode)
    if name is None:
        raise ValueError(f"mode must be one of {', '.join(_STACK_OPS)}, got {mode!r}")
    need = _needs_grad(input, hx, cx, *weights)
    out, h_n, c_n, _ = _call(getattr(ops, name), need, input, batch_sizes, hx, cx, weights,
                             has_biases, num_layers, bidirectional, float(dropout), train, need)  # fmt: skip
    return out, h_n, c_n if mode in ("LSTM", "LN_LSTM") else None


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    """One Elman RNN step on ``[B, I]``; ``hx`` ``[B, H]`` is required. Returns ``h'``."""
    op = getattr(ops, f"{_rnn_family(nonlinearity)}_cell")
    need = _needs_grad(input, hx, w_ih, w_hh, b_ih, b_hh)
    return _call(op, need, input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step on ``[B, I]``. Returns ``(h', c')``."""
    need = _needs_grad(input, hx, cx, w_ih, w_hh, b_ih, b_hh)
    hy, cy, _ = _call(ops.lstm_cell, need, input, hx, cx, w_ih, w_hh, b_ih, b_hh)
    return hy, cy


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step on ``[B, I]``. Returns ``h'``."""
    need = _needs_grad(input, hx, w_ih, w_hh, b_ih, b_hh)
    return _call(ops.gru_cell, need, input, hx, w_ih, w_hh, b_ih, b_hh)[0]


def build_info() -> dict:
    """How the extension was built and what it runs with."""
    info = dict(_C.build_info())
    info["torch"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    info["cuda_available"] = torch.cuda.is_available()
    return info


def cpu_cache_info() -> dict:
    """The CPU buffer cache: ``limit_bytes``, ``cached_bytes`` and ``cached_blocks`` (freed
    blocks kept for reuse), ``hits`` and ``misses`` (allocations served from it or not).

    The ops take their large CPU buffers (64 KiB and up: workspaces, outputs, gate gradients)
    from this cache, so repeated training steps reuse mapped pages instead of page-faulting
    fresh ones. Cached blocks are free memory to ``torch.profiler`` but stay in the process's
    resident set; the limit (default 512 MiB, or ``FUSEDRNN_CPU_CACHE_MB`` at import) bounds them.
    """
    return dict(_C.cpu_cache_info())


def empty_cpu_cache() -> None:
    """Free every block the CPU buffer cache holds (buffers in use stay valid)."""
    _C.empty_cpu_cache()


def set_cpu_cache_limit(limit_bytes: int) -> None:
    """Keep at most ``limit_bytes`` of freed CPU buffers for reuse; 0 turns the cache off."""
    if (
        isinstance(limit_bytes, bool)
        or not isinstance(limit_bytes, numbers.Integral)  # numpy's integers too
        or not 0 <= limit_bytes < 2**63
    ):
        raise ValueError(f"limit_bytes: expected an int in [0, 2**63), got {limit_bytes!r}")
    _C.set_cpu_cache_limit(int(limit_bytes))
