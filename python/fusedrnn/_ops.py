"""Python glue of the fused ops: loads ``fusedrnn._C``, registers fake (meta) kernels and
autograd for every forward op, and offers typed wrappers.

Layer ops run one direction of one layer over a whole sequence. ``input`` is time-major
``[T, B, I]``, or packed data ``[N, I]`` with ``batch_sizes`` (``PackedSequence.batch_sizes``:
int64, CPU, non-increasing). Weights use ``torch.nn``'s layout and gate order. The backward
ops are ops too (``torch.ops.fusedrnn.*_backward``), so autograd, ``torch.compile`` and
``torch.library.opcheck`` see every step.
"""

from __future__ import annotations

import torch
from torch.autograd import forward_ad

from . import _C  # noqa: F401  (loading the library registers the ops)

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


def _grad_input(input, input_grad: bool):
    """Layer backward ops return an empty grad_input when asked not to compute it."""
    return input.new_empty(input.shape) if input_grad else _empty0(input)


def _out_rows(input, batch_sizes):
    return input.shape[:1] if batch_sizes is not None else input.shape[:2]


# ---- fake kernels ---------------------------------------------------------------------------
def _same_device(op: str, names: str, args) -> None:
    """The real kernels check this; a fake kernel runs instead of them when any argument is
    on the meta device, so it must refuse mixed devices itself."""
    names = [n.strip() for n in names.split(",")]
    ref = next((a for n, a in zip(names, args) if n == "input"), None)
    for n, a in zip(names, args):
        if isinstance(a, torch.Tensor) and n != "batch_sizes" and a.device != ref.device:
            raise RuntimeError(
                f"fusedrnn::{op}: expected {n} on device {ref.device} like input, got {a.device}"
            )


def register_fake(op: str):
    """register_fake plus the device check above."""

    def deco(fn):
        import inspect

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

    @register_fake(f"{fam}_layer_backward")
    def _(grad_output, grad_hn, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, output,
          input_grad=True):  # fmt: skip
        H = w_hh.shape[1]
        B = _fake_batch(input, batch_sizes, h0)
        return (
            _grad_input(input, input_grad),
            input.new_empty((B, H)),
            torch.empty_like(w_ih),
            torch.empty_like(w_hh),
            torch.empty_like(b_ih) if b_ih is not None else _empty0(input),
            torch.empty_like(b_hh) if b_hh is not None else _empty0(input),
        )

    @register_fake(f"{fam}_cell")
    def _(input, hx, w_ih, w_hh, b_ih, b_hh):
        return input.new_empty((input.shape[0], w_hh.shape[1]))

    @register_fake(f"{fam}_cell_backward")
    def _(grad_hy, input, hx, w_ih, w_hh, b_ih, b_hh, hy):
        return (
            input.new_empty(input.shape),
            hx.new_empty(hx.shape),
            torch.empty_like(w_ih),
            torch.empty_like(w_hh),
            torch.empty_like(b_ih) if b_ih is not None else _empty0(input),
            torch.empty_like(b_hh) if b_hh is not None else _empty0(input),
        )


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
        input.new_empty((n, 5 * H)),
    )


@register_fake("lstm_layer_backward")
def _(grad_output, grad_hn, grad_cn, input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
      reverse, output, workspace, input_grad=True):  # fmt: skip
    H = w_ih.shape[0] // 4
    P = w_hh.shape[1]
    B = _fake_batch(input, batch_sizes, h0 if h0 is not None else c0)
    return (
        _grad_input(input, input_grad),
        input.new_empty((B, P)),
        input.new_empty((B, H)),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        torch.empty_like(b_ih) if b_ih is not None else _empty0(input),
        torch.empty_like(b_hh) if b_hh is not None else _empty0(input),
        torch.empty_like(w_hr) if w_hr is not None else _empty0(input),
    )


@register_fake("lstm_cell")
def _(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    H = w_ih.shape[0] // 4
    B = input.shape[0]
    return input.new_empty((B, H)), input.new_empty((B, H)), input.new_empty((B, 5 * H))


@register_fake("lstm_cell_backward")
def _(grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, b_ih, b_hh, workspace):
    return (
        input.new_empty(input.shape),
        hx.new_empty(hx.shape),
        cx.new_empty(cx.shape),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        torch.empty_like(b_ih) if b_ih is not None else _empty0(input),
        torch.empty_like(b_hh) if b_hh is not None else _empty0(input),
    )


@register_fake("gru_layer")
def _(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, need_workspace=True):
    H = w_hh.shape[1]
    B = _fake_batch(input, batch_sizes, h0)
    n = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
    return (
        input.new_empty((*_out_rows(input, batch_sizes), H)),
        input.new_empty((B, H)),
        input.new_empty((n, 4 * H)),
    )


@register_fake("gru_layer_backward")
def _(grad_output, grad_hn, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, output,
      workspace, input_grad=True):  # fmt: skip
    H = w_hh.shape[1]
    B = _fake_batch(input, batch_sizes, h0)
    return (
        _grad_input(input, input_grad),
        input.new_empty((B, H)),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        torch.empty_like(b_ih) if b_ih is not None else _empty0(input),
        torch.empty_like(b_hh) if b_hh is not None else _empty0(input),
    )


@register_fake("gru_cell")
def _(input, hx, w_ih, w_hh, b_ih, b_hh):
    H = w_hh.shape[1]
    return input.new_empty((input.shape[0], H)), input.new_empty((input.shape[0], 4 * H))


@register_fake("gru_cell_backward")
def _(grad_hy, input, hx, w_ih, w_hh, b_ih, b_hh, workspace):
    return (
        input.new_empty(input.shape),
        hx.new_empty(hx.shape),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        torch.empty_like(b_ih) if b_ih is not None else _empty0(input),
        torch.empty_like(b_hh) if b_hh is not None else _empty0(input),
    )


# ---- autograd ------------------------------------------------------------------------------
def _g(grad, given):
    """The gradient of an optional input: None when the input was None."""
    return grad if given is not None else None


def _layer_grads(need_gi, gi, gh0, h0, gwi, gwh, gbi, b_ih, gbh, b_hh):
    """Gradients of a layer op's leading (input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh)."""
    return (gi if need_gi else None, None, _g(gh0, h0), gwi, gwh, _g(gbi, b_ih), _g(gbh, b_hh))


def _register_rnn_autograd(fam: str) -> None:
    bwd = getattr(ops, f"{fam}_layer_backward")

    def setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # the ops take None for an unused output
        input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse = inputs
        ctx.save_for_backward(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, output[0])
        ctx.reverse = reverse

    def backward(ctx, g_out, g_hn):
        input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out = ctx.saved_tensors
        need_gi = ctx.needs_input_grad[0]
        gi, gh0, gwi, gwh, gbi, gbh = bwd(
            g_out, g_hn, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, ctx.reverse, out, need_gi
        )
        return (*_layer_grads(need_gi, gi, gh0, h0, gwi, gwh, gbi, b_ih, gbh, b_hh), None)

    torch.library.register_autograd(f"fusedrnn::{fam}_layer", backward, setup_context=setup)

    cbwd = getattr(ops, f"{fam}_cell_backward")

    def csetup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # the ops take None for an unused output
        input, hx, w_ih, w_hh, b_ih, b_hh = inputs
        ctx.save_for_backward(input, hx, w_ih, w_hh, b_ih, b_hh, output)

    def cbackward(ctx, g_hy):
        input, hx, w_ih, w_hh, b_ih, b_hh, hy = ctx.saved_tensors
        gi, ghx, gwi, gwh, gbi, gbh = cbwd(g_hy, input, hx, w_ih, w_hh, b_ih, b_hh, hy)
        return gi, ghx, gwi, gwh, _g(gbi, b_ih), _g(gbh, b_hh)

    torch.library.register_autograd(f"fusedrnn::{fam}_cell", cbackward, setup_context=csetup)


for _fam in RNN_FAMILIES:
    _register_rnn_autograd(_fam)


def _no_workspace(op):
    raise RuntimeError(
        f"fusedrnn::{op} was called with need_workspace=False, but its gradient is needed: "
        "the workspace that backward reads was not written"
    )


def _lstm_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # the ops take None for an unused output
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, *need = inputs
    if need and not need[0]:
        _no_workspace("lstm_layer")
    out, _, _, ws = output
    ctx.mark_non_differentiable(ws)
    ctx.save_for_backward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, ws)
    ctx.reverse = reverse


def _lstm_backward(ctx, g_out, g_hn, g_cn, _g_ws):
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, ws = ctx.saved_tensors
    need_gi = ctx.needs_input_grad[0]
    gi, gh0, gc0, gwi, gwh, gbi, gbh, gwr = ops.lstm_layer_backward(
        g_out, g_hn, g_cn, input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
        ctx.reverse, out, ws, need_gi,
    )  # fmt: skip
    return (gi if need_gi else None, None, _g(gh0, h0), _g(gc0, c0), gwi, gwh, _g(gbi, b_ih), _g(gbh, b_hh),
            _g(gwr, w_hr), None, None)  # fmt: skip


torch.library.register_autograd("fusedrnn::lstm_layer", _lstm_backward, setup_context=_lstm_setup)


def _lstm_cell_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # the ops take None for an unused output
    input, hx, cx, w_ih, w_hh, b_ih, b_hh = inputs
    ctx.mark_non_differentiable(output[2])
    ctx.save_for_backward(input, hx, cx, w_ih, w_hh, b_ih, b_hh, output[2])


def _lstm_cell_backward(ctx, g_hy, g_cy, _g_ws):
    input, hx, cx, w_ih, w_hh, b_ih, b_hh, ws = ctx.saved_tensors
    gi, ghx, gcx, gwi, gwh, gbi, gbh = ops.lstm_cell_backward(
        g_hy, g_cy, input, hx, cx, w_ih, w_hh, b_ih, b_hh, ws
    )
    return gi, ghx, gcx, gwi, gwh, _g(gbi, b_ih), _g(gbh, b_hh)


torch.library.register_autograd(
    "fusedrnn::lstm_cell", _lstm_cell_backward, setup_context=_lstm_cell_setup
)


def _gru_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # the ops take None for an unused output
    input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, *need = inputs
    if need and not need[0]:
        _no_workspace("gru_layer")
    out, _, ws = output
    ctx.mark_non_differentiable(ws)
    ctx.save_for_backward(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out, ws)
    ctx.reverse = reverse


def _gru_backward(ctx, g_out, g_hn, _g_ws):
    input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out, ws = ctx.saved_tensors
    need_gi = ctx.needs_input_grad[0]
    gi, gh0, gwi, gwh, gbi, gbh = ops.gru_layer_backward(
        g_out, g_hn, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, ctx.reverse, out, ws, need_gi
    )
    return (*_layer_grads(need_gi, gi, gh0, h0, gwi, gwh, gbi, b_ih, gbh, b_hh), None, None)


torch.library.register_autograd("fusedrnn::gru_layer", _gru_backward, setup_context=_gru_setup)


def _gru_cell_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # the ops take None for an unused output
    input, hx, w_ih, w_hh, b_ih, b_hh = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, hx, w_ih, w_hh, b_ih, b_hh, output[1])


def _gru_cell_backward(ctx, g_hy, _g_ws):
    input, hx, w_ih, w_hh, b_ih, b_hh, ws = ctx.saved_tensors
    gi, ghx, gwi, gwh, gbi, gbh = ops.gru_cell_backward(g_hy, input, hx, w_ih, w_hh, b_ih, b_hh, ws)
    return gi, ghx, gwi, gwh, _g(gbi, b_ih), _g(gbh, b_hh)


torch.library.register_autograd(
    "fusedrnn::gru_cell", _gru_cell_backward, setup_context=_gru_cell_setup
)


# ---- typed wrappers ------------------------------------------------------------------------
def _needs_grad(*tensors) -> bool:
    """Whether autograd will record this call (so the forward must save its workspace)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _below_autograd(need_grad: bool) -> bool:
    """Whether a call may skip the autograd layer: it records nothing (no input needs a
    gradient, or grad mode is off), runs eagerly, and no forward-AD level is open. The
    Python autograd kernel of register_autograd costs ~6 us per call even when it only
    passes the call on, a third of a single-step cell call (bench ``stream``)."""
    return not need_grad and forward_ad._current_level < 0 and not torch.compiler.is_compiling()


def _call(op, need_grad: bool, *args):
    if _below_autograd(need_grad):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    return op(*args)


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


# Backward ops are differentiable too (double backward through the readable reference).
from . import _double_backward  # noqa: E402

_double_backward.register_all()
