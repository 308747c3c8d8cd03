"""The modules' one-call path (``_C.cell_step`` and ``_C.stack_step``, cpp/module_fast_path.cpp,
and the modules' ``__call__`` in C++, ``_C.cell_call`` and ``_C.stack_call``,
cpp/module_call.cpp).

It must be invisible: the same bits, gradients, saved tensors and errors as the Python path
(``_fast_path_open`` patched to False), and it must step aside for whatever it does not
handle (unbatched or packed input, subclasses, torch-function modes, tracing, bad arguments)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import fusedrnn
from fusedrnn import _C, modules

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def _make(cell, I, H, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    ref = CELLS[cell](I, H, dtype=dtype, **kw)
    return ref, fusedrnn.from_torch(ref)


def _inputs(cell, B, I, H, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, I, generator=g, dtype=dtype, requires_grad=grad)
    h = torch.randn(B, H, generator=g, dtype=dtype, requires_grad=grad)
    if cell == "lstm":
        return x, (h, torch.randn(B, H, generator=g, dtype=dtype, requires_grad=grad))
    return x, h


def _slow(monkeypatch):
    """The Python path: no cell_step / stack_step, and the modules' __call__ without its C++
    front (_C.cell_call / stack_call, which read forward-AD and ONNX state themselves, not
    _fast_path_open)."""
    monkeypatch.setattr(modules, "_fast_path_open", lambda: False)
    monkeypatch.setattr(modules._FusedCellBase, "__call__", modules._lean_call)
    monkeypatch.setattr(modules._FusedRNNBase, "__call__", modules._lean_call)


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture
def fast_only(monkeypatch):
    """Fails the test if the module falls back to its Python path."""

    def refuse(*args, **kwargs):
        raise AssertionError("the Python path ran")

    monkeypatch.setattr(modules, "_use_fused", refuse)
    monkeypatch.setattr(modules._FusedRNNBase, "_fused_forward", refuse)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("B,I,H", [(1, 1, 64), (1, 1, 1), (3, 5, 33), (7, 128, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_runs_fast_and_matches_python_path_bitwise(cell, B, I, H, dtype, monkeypatch):
    _, fused = _make(cell, I, H, dtype)
    x, hx = _inputs(cell, B, I, H, dtype)
    with torch.no_grad():
        with monkeypatch.context() as m:
            m.setattr(modules, "_use_fused", None)  # the Python path would fail at once
            fast = _flat(fused(x, hx))
        _slow(monkeypatch)
        slow = _flat(fused(x, hx))
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert a.dtype == dtype and a.shape == (B, H)
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("B,I,H", [(1, 1, 64), (3, 5, 33)])
@pytest.mark.parametrize("bias", [True, False])
def test_training_matches_python_path_and_torch_nn(cell, B, I, H, bias, monkeypatch):
    ref, fused = _make(cell, I, H, bias=bias)
    results = []
    for module, fast in ((fused, True), (fused, False), (ref, None)):
        if fast is False:
            _slow(monkeypatch)
        x, hx = _inputs(cell, B, I, H, grad=True)
        module.zero_grad(set_to_none=True)
        out = _flat(module(x, hx))
        g = torch.Generator().manual_seed(2)
        sum((o * torch.randn(o.shape, generator=g)).sum() for o in out).backward()
        states = list(hx) if cell == "lstm" else [hx]
        grads = [x.grad, *(s.grad for s in states), *(p.grad for p in module.parameters())]
        results.append((out, grads))
    (fast_out, fast_grads), (slow_out, slow_grads), (ref_out, ref_grads) = results
    for a, b, r in zip(fast_out, slow_out, ref_out):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
    for a, b, r in zip(fast_grads, slow_grads, ref_grads):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_nonlinearity(nonlinearity, fast_only):
    ref, fused = _make("rnn", 4, 9, nonlinearity=nonlinearity)
    x, h = _inputs("rnn", 2, 4, 9)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, h), ref(x, h))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hx_none_is_zeros(cell, fast_only):
    ref, fused = _make(cell, 3, 8)
    x = torch.randn(4, 3)
    for a, b in zip(_flat(fused(x)), _flat(ref(x))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_saves_what_the_python_path_saves(cell, monkeypatch):
    """Same saved tensors (count and shapes) for backward, on either path."""
    _, fused = _make(cell, 5, 33)
    shapes = []
    for fast in (True, False):
        if not fast:
            _slow(monkeypatch)
        x, hx = _inputs(cell, 3, 5, 33, grad=True)
        saved = []

        def pack(t):
            saved.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fused(x, hx)
        shapes.append(sorted(saved))
    assert shapes[0] == shapes[1]


def test_non_contiguous_input_and_list_state(fast_only):
    ref, fused = _make("lstm", 6, 10)
    x = torch.randn(6, 4).t()  # [4, 6], not contiguous
    h, c = torch.randn(4, 10), torch.randn(4, 10)
    with torch.no_grad():
        for a, b in zip(fused(x, [h, c]), ref(x, (h, c))):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_unbatched_takes_python_path(cell):
    ref, fused = _make(cell, 3, 8)
    x, hx = _inputs(cell, 1, 3, 8)
    x = x[0]
    hx = tuple(s[0] for s in hx) if cell == "lstm" else hx[0]
    assert _C.cell_step(fused._fast_kind, 3, 8, x, hx, *_weights(fused)) is None
    with torch.no_grad():
        for a, b in zip(_flat(fused(x, hx)), _flat(ref(x, hx))):
            assert a.shape == (8,)
            torch.testing.assert_close(a, b)


def _weights(m):
    p = m._parameters
    return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]


@pytest.mark.parametrize(
    "case",
    ["bad kind", "unbatched", "3-D", "input size", "dtype", "state shape", "state pair",
     "half weights", "meta input"],
)  # fmt: skip
def test_cell_step_declines_what_it_does_not_handle(case):
    """None (the module's Python path then runs, with torch.nn's checks and messages)."""
    _, fused = _make("lstm", 3, 8)
    w = list(_weights(fused))
    kind, x, hx = 2, torch.randn(2, 3), (torch.randn(2, 8), torch.randn(2, 8))
    if case == "bad kind":
        kind = 7
    elif case == "unbatched":
        x, hx = x[0], (hx[0][0], hx[1][0])
    elif case == "3-D":
        x = x[None]
    elif case == "input size":
        x = torch.randn(2, 4)
    elif case == "dtype":
        x = x.double()
    elif case == "state shape":
        hx = (hx[0], torch.randn(3, 8))
    elif case == "state pair":
        hx = (hx[0],)
    elif case == "half weights":
        w = [t.half() for t in w]
        x, hx = x.half(), tuple(s.half() for s in hx)
    elif case == "meta input":
        x = x.to("meta")
    assert _C.cell_step(kind, 3, 8, x, hx, *w) is None


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ("hx batch", RuntimeError, "doesn't match hidden0 batch size"),
        ("input dtype", RuntimeError, "expected input dtype torch.float32"),
        ("hx type", TypeError, "expected hx to be a tuple"),
        ("weight shape", RuntimeError, None),
    ],
)
def test_errors_are_the_python_paths(bad, error, match, monkeypatch):
    _, fused = _make("lstm", 3, 8)
    x, hx = torch.randn(2, 3), (torch.randn(2, 8), torch.randn(2, 8))
    if bad == "hx batch":
        hx = (torch.randn(3, 8), hx[1])
    elif bad == "input dtype":
        x = x.double()
    elif bad == "hx type":
        hx = hx[0]
    elif bad == "weight shape":
        fused.weight_hh = nn.Parameter(torch.randn(32, 7))
    messages = []
    for fast in (True, False):
        if not fast:
            _slow(monkeypatch)
        with pytest.raises(error, match=match) as info:
            fused(x, hx)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


class _Tagged(torch.Tensor):
    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclass_sees_the_call():
    _, fused = _make("gru", 3, 8)
    x = torch.randn(2, 3).as_subclass(_Tagged)
    _Tagged.seen.clear()
    with torch.no_grad():
        out = fused(x, torch.randn(2, 8))
    assert _Tagged.seen, "__torch_function__ was bypassed"
    assert isinstance(out, _Tagged)


def test_torch_function_mode_sees_the_call():
    _, fused = _make("rnn", 3, 8)
    seen = []

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    with Mode(), torch.no_grad():
        fused(torch.randn(2, 3), torch.randn(2, 8))
    assert seen


def test_dispatch_mode_and_profiler_see_the_op(fast_only):
    from torch.utils._python_dispatch import TorchDispatchMode

    _, fused = _make("lstm", 3, 8)
    seen = []

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, hx = torch.randn(2, 3), (torch.randn(2, 8), torch.randn(2, 8))
    with Mode(), torch.no_grad():
        fused(x, hx)
    assert any("fusedrnn.lstm_cell" in s for s in seen), seen
    with torch.profiler.profile() as prof, torch.no_grad():
        fused(x, hx)
    assert any(e.name == "fusedrnn::lstm_cell" for e in prof.events())


def test_jit_trace_records_the_op():
    _, fused = _make("gru", 3, 8)
    x, h = torch.randn(2, 3), torch.randn(2, 8)
    with torch.no_grad():
        traced = torch.jit.trace(fused, (x, h))
        torch.testing.assert_close(traced(x, h), fused(x, h))
    assert "fusedrnn::gru_cell" in str(traced.graph)


def test_inference_mode_and_requires_grad_weights(fast_only):
    ref, fused = _make("lstm", 3, 8)
    x, hx = _inputs("lstm", 2, 3, 8)
    with torch.inference_mode():
        out = fused(x, hx)
    assert not out[0].requires_grad
    out = fused(x, hx)  # weights require grad: the C++ autograd entry
    assert out[0].requires_grad and out[0].grad_fn is not None
    torch.testing.assert_close(out[0], ref(x, hx)[0])


# ---- sequence modules (stack_step) -----------------------------------------------------------
STACKS = {
    "rnn": lambda I, H, **kw: fusedrnn.RNN(I, H, **kw),
    "relu": lambda I, H, **kw: fusedrnn.RNN(I, H, nonlinearity="relu", **kw),
    "lstm": lambda I, H, **kw: fusedrnn.LSTM(I, H, **kw),
    "proj": lambda I, H, **kw: fusedrnn.LSTM(I, H, proj_size=3, **kw),
    "gru": lambda I, H, **kw: fusedrnn.GRU(I, H, **kw),
    "lnlstm": lambda I, H, **kw: fusedrnn.LayerNormLSTM(I, H, **kw),
    "lngru": lambda I, H, **kw: fusedrnn.LayerNormGRU(I, H, **kw),
}


def _stack_inputs(name, m, T, B, dtype, grad=False, batch_first=False):
    g = torch.Generator().manual_seed(5)
    shape = (B, T, m.input_size) if batch_first else (T, B, m.input_size)
    x = torch.randn(*shape, generator=g, dtype=dtype, requires_grad=grad)
    LD = m.num_layers * (2 if m.bidirectional else 1)
    W = m.proj_size if m.proj_size > 0 else m.hidden_size
    h = torch.randn(LD, B, W, generator=g, dtype=dtype, requires_grad=grad)
    if m.mode == "LSTM":
        c = torch.randn(LD, B, m.hidden_size, generator=g, dtype=dtype, requires_grad=grad)
        return x, (h, c)
    return x, h


def _outs(result):
    out, hidden = result
    return [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]


@pytest.mark.parametrize("name", list(STACKS))
@pytest.mark.parametrize(
    "T,B,layers,bidir,batch_first,with_hx",
    [(1, 1, 1, False, False, True), (5, 3, 2, True, True, False), (4, 2, 2, False, False, True)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stack_inference_runs_fast_and_matches_python_path_bitwise(
    name, T, B, layers, bidir, batch_first, with_hx, dtype, monkeypatch
):
    torch.manual_seed(0)
    m = STACKS[name](3, 7, num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    m = m.to(dtype).eval()
    x, hx = _stack_inputs(name, m, T, B, dtype, batch_first=batch_first)
    hx = hx if with_hx else None
    with torch.no_grad():
        with monkeypatch.context() as mp:
            mp.setattr(modules._FusedRNNBase, "_fused_forward", None)  # the Python path fails
            fast = _outs(m(x, hx))
        _slow(monkeypatch)
        slow = _outs(m(x, hx))
    single = T == 1 and layers == 1 and not bidir and name in ("rnn", "relu", "lstm", "gru")
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and a.stride() == b.stride()
        if single:  # the cell op's sums (test_single_step_is_the_cell_op), not the stack op's
            torch.testing.assert_close(a, b)
        else:
            assert torch.equal(a, b)


# One step of one layer and direction: stack_step runs the cell op.
SINGLE = {
    "rnn_tanh": (lambda **kw: fusedrnn.RNN(3, 7, **kw), lambda **kw: fusedrnn.RNNCell(3, 7, **kw)),
    "rnn_relu": (
        lambda **kw: fusedrnn.RNN(3, 7, nonlinearity="relu", **kw),
        lambda **kw: fusedrnn.RNNCell(3, 7, nonlinearity="relu", **kw),
    ),
    "lstm": (lambda **kw: fusedrnn.LSTM(3, 7, **kw), lambda **kw: fusedrnn.LSTMCell(3, 7, **kw)),
    "gru": (lambda **kw: fusedrnn.GRU(3, 7, **kw), lambda **kw: fusedrnn.GRUCell(3, 7, **kw)),
}


@pytest.mark.parametrize("name", list(SINGLE))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_step_is_the_cell_op(name, batch_first, with_hx, bias, dtype, fast_only):
    """T = 1 through one layer and direction: the cell module's bits for the output, the
    states and every gradient (output and h_n's gradients reach h' summed); h_n is a tensor
    of its own, not a view of the output."""
    make_layer, make_cell = SINGLE[name]
    torch.manual_seed(0)
    layer = make_layer(bias=bias, batch_first=batch_first).to(dtype)
    cell = make_cell(bias=bias).to(dtype)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    lstm = name == "lstm"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=g, dtype=dtype)
    states = [torch.randn(4, 7, generator=g, dtype=dtype) for _ in range(2 if lstm else 1)]
    seeds = [torch.randn(4, 7, generator=g, dtype=dtype) for _ in range(3 if lstm else 2)]

    xl = (x.unsqueeze(1) if batch_first else x.unsqueeze(0)).requires_grad_()
    sl = [s.unsqueeze(0).requires_grad_() for s in states]
    hx = None if not with_hx else (tuple(sl) if lstm else sl[0])
    out, hidden = layer(xl, hx)
    got = [out, *(hidden if lstm else (hidden,))]
    assert got[1].data_ptr() != out.data_ptr()
    assert out.shape == ((4, 1, 7) if batch_first else (1, 4, 7))
    torch.autograd.backward(got, [s.view_as(t) for s, t in zip(seeds, got)])

    xc = x.clone().requires_grad_()
    sc = [s.clone().requires_grad_() for s in states]
    hc = None if not with_hx else (tuple(sc) if lstm else sc[0])
    res = cell(xc, hc)
    want = list(res) if lstm else [res]
    torch.autograd.backward(want, [seeds[0] + seeds[1], *seeds[2:]])

    assert torch.equal(out.reshape(4, 7), want[0]) and torch.equal(got[1][0], want[0])
    if lstm:
        assert torch.equal(got[2][0], want[1])
    assert torch.equal(xl.grad.reshape(4, 3), xc.grad)
    if with_hx:
        assert all(torch.equal(a.grad[0], b.grad) for a, b in zip(sl, sc))
    for (n, p), q in zip(layer.named_parameters(), cell.parameters()):
        assert torch.equal(p.grad, q.grad), n


@pytest.mark.parametrize("name", list(SINGLE))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_single_step_without_grad_returns_tensors_of_their_own(name, batch_first, with_hx,
                                                               monkeypatch):  # fmt: skip
    """Without autograd the T = 1 call reads its operands and returns its results as plain
    aliases (no view records): the Python path's values, shapes and strides, from an input
    that is a slice at an offset of a longer sequence; h_n and c_n are not the output's memory,
    and editing the output in place changes neither them nor the caller's tensors."""
    make_layer, _ = SINGLE[name]
    torch.manual_seed(0)
    layer = make_layer(batch_first=batch_first).eval()
    lstm = name == "lstm"
    seq = torch.randn(4, 6, 3) if batch_first else torch.randn(6, 4, 3)
    x = seq[:, 2:3] if batch_first else seq[2:3]  # not contiguous when batch_first
    x = x.contiguous() if batch_first else x
    assert batch_first or x.storage_offset() > 0
    states = [torch.randn(1, 4, 7) for _ in range(2 if lstm else 1)]
    hx = None if not with_hx else (tuple(states) if lstm else states[0])
    kept = [s.clone() for s in states]
    with torch.no_grad():
        with monkeypatch.context() as mp:
            mp.setattr(modules._FusedRNNBase, "_fused_forward", None)  # the Python path fails
            fast = _outs(layer(x, hx))
        with monkeypatch.context() as mp:
            _slow(mp)
            slow = _outs(layer(x, hx))
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and a.stride() == b.stride() and not a.requires_grad
        torch.testing.assert_close(a, b)
    out, rest = fast[0], fast[1:]
    assert all(t.data_ptr() != out.data_ptr() for t in rest)
    before = [t.clone() for t in rest]
    out.mul_(2).add_(1)
    assert all(torch.equal(t, u) for t, u in zip(rest, before))
    assert all(torch.equal(s, k) for s, k in zip(states, kept))


@pytest.mark.parametrize("context", ["autocast", "vmap", "grad transform"])
def test_steps_decline_under_autocast_and_torch_func(context):
    """cell_step and stack_step read autocast and torch.func's transforms themselves (the
    module's Python path handles both); outside them the same calls run."""
    _, cell = _make("gru", 3, 8)
    layer = fusedrnn.GRU(3, 8)
    h = torch.randn(2, 8)
    got = []

    def calls(x):
        got.append(_C.cell_step(3, 3, 8, x, h, *_weights(cell)))
        got.append(_C.stack_step(3, x[None], h[None], layer._flat_weights, True, 1, False, 0.0,
                                 False, False, 3, 8, 0))  # fmt: skip
        return x.sum()

    x = torch.randn(2, 3)
    calls(x)
    assert all(r is not None for r in got)
    got.clear()
    if context == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            calls(x)
    elif context == "vmap":
        torch.func.vmap(calls)(x[None])
    else:
        torch.func.grad(calls)(x)
    assert got == [None, None]


@pytest.mark.parametrize("name", ["rnn", "lstm", "proj", "gru", "lnlstm", "lngru"])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_stack_training_matches_python_path(name, dropout, monkeypatch):
    """Gradients of every input, state and weight; dropout masks drawn from the same seed."""
    results = []
    for fast in (True, False):
        if not fast:
            _slow(monkeypatch)
        torch.manual_seed(0)
        m = STACKS[name](3, 9, num_layers=2, bidirectional=True, dropout=dropout).train()
        x, hx = _stack_inputs(name, m, 4, 2, torch.float32, grad=True)
        torch.manual_seed(7)
        outs = _outs(m(x, hx))
        g = torch.Generator().manual_seed(2)
        sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs).backward()
        states = list(hx) if isinstance(hx, tuple) else [hx]
        results.append(
            (outs, [x.grad, *(s.grad for s in states)] + [p.grad for p in m.parameters()])
        )
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        assert torch.equal(a, b)


def test_stack_fast_path_matches_torch_nn(fast_only):
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers=2, batch_first=True)
    fused = fusedrnn.from_torch(ref)
    x = torch.randn(3, 5, 4)
    for a, b in zip(_outs(fused(x)), _outs(ref(x))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("case", ["packed", "unbatched", "hx shape", "hx dtype", "input size"])
def test_stack_declines_and_python_path_answers(case):
    torch.manual_seed(0)
    ref = nn.GRU(4, 6)
    fused = fusedrnn.from_torch(ref)
    x, h = torch.randn(5, 2, 4), torch.randn(1, 2, 6)
    w = fused._flat_weights
    if case == "packed":
        x = nn.utils.rnn.pack_padded_sequence(x, [5, 3])
    elif case == "unbatched":
        x, h = x[:, 0], h[:, 0]
    elif case == "hx shape":
        h = torch.randn(1, 3, 6)
    elif case == "hx dtype":
        h = h.double()
    elif case == "input size":
        x = torch.randn(5, 2, 3)
    args = (False, 1, False, 0.0, False, False, 4, 6, 0)
    assert _C.stack_step(3, x, h, w, True, *args[1:]) is None
    errors = []
    for module in (fused, ref):
        try:
            out = module(x, h)
            errors.append(None)
        except Exception as e:  # noqa: BLE001 (the same exception from both is the check)
            errors.append((type(e), str(e)))
            continue
        if case in ("packed", "unbatched"):
            data = out[0].data if case == "packed" else out[0]
            torch.testing.assert_close(
                data, (ref(x, h)[0].data if case == "packed" else ref(x, h)[0])
            )
    if case in ("hx shape", "input size"):
        assert errors[0] is not None and errors[0][0] is errors[1][0]


def test_stack_dispatch_mode_and_subclass_see_the_call():
    from torch.utils._python_dispatch import TorchDispatchMode

    m = fusedrnn.LSTM(3, 5)
    x = torch.randn(2, 1, 3)
    seen = []

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Mode(), torch.no_grad():
        m(x)
    assert any("fusedrnn.lstm_stack" in s for s in seen), seen
    _Tagged.seen.clear()
    with torch.no_grad():
        out = m(x.as_subclass(_Tagged))
    assert _Tagged.seen and isinstance(out[0], _Tagged)


def test_update_flat_weights_sees_swapped_parameters():
    """functional_call and parameter assignment still reach the op (torch.nn's rule)."""
    torch.manual_seed(0)
    m = fusedrnn.GRU(3, 4)
    x = torch.randn(2, 1, 3)
    zeros = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    out = torch.func.functional_call(m, zeros, (x,))[0]
    assert torch.equal(out, torch.zeros_like(out))
    m.weight_hh_l0 = nn.Parameter(torch.zeros_like(m.weight_hh_l0))
    assert m._flat_weights[1] is m.weight_hh_l0
    with torch.no_grad():
        m(x)
    assert m._flat_weights[1] is m._parameters["weight_hh_l0"]


# ---- the modules' __call__ (modules._lean_call) ----------------------------------------------
_CALL_CASES = [
    (fusedrnn.RNN, (3, 5, 4), lambda out: out[0]),
    (fusedrnn.LSTM, (3, 5, 4), lambda out: out[0]),
    (fusedrnn.GRU, (3, 5, 4), lambda out: out[0]),
    (fusedrnn.LayerNormLSTM, (3, 5, 4), lambda out: out[0]),
    (fusedrnn.RNNCell, (5, 4), lambda out: out),
    (fusedrnn.LSTMCell, (5, 4), lambda out: out[0]),
    (fusedrnn.GRUCell, (5, 4), lambda out: out),
    (fusedrnn.LayerNormGRUCell, (5, 4), lambda out: out),
]


@pytest.mark.parametrize("cls,shape,main", _CALL_CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_call_runs_hooks_as_module_call(cls, shape, main):
    """__call__ goes straight to forward only without hooks: module pre-hooks and hooks
    (which may change the output), global module hooks and full backward hooks all run, as
    nn.Module.__call__ runs them, and a removed hook runs no more."""
    torch.manual_seed(0)
    m = cls(4, 6)
    x = torch.randn(*shape)
    plain = main(m(x)).detach()
    calls = []
    pre = m.register_forward_pre_hook(lambda mod, args: calls.append("pre"))
    post = m.register_forward_hook(lambda mod, args, out: calls.append("post"))

    def double(mod, args, out):  # the hook's return value replaces the output
        return out * 2 if isinstance(out, torch.Tensor) else (out[0] * 2, *out[1:])

    doubled = m.register_forward_hook(double)
    glob = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: calls.append(type(mod).__name__)
    )
    try:
        out = m(x)
    finally:
        glob.remove()
    assert calls == ["pre", cls.__name__, "post"]  # global hooks first, as torch runs them
    assert torch.equal(main(out).detach(), plain * 2)
    for h in (pre, post, doubled):
        h.remove()
    calls.clear()
    assert torch.equal(main(m(x)).detach(), plain) and calls == []
    grads = []
    m.register_full_backward_hook(lambda mod, gin, gout: grads.append(len(gout)))
    main(m(x.requires_grad_())).sum().backward()
    assert grads and grads[0] >= 1


def test_call_under_a_patched_module_call_and_module_compile():
    """A tracer that patches nn.Module.__call__ (torch.fx) sees the fused modules' calls:
    with them as leaves, the graph calls them as modules. module.compile() is honoured: the
    call goes through its compiled wrapper."""
    from torch._dynamo.testing import CompileCounter

    class Leaves(torch.fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, (modules._FusedRNNBase, modules._FusedCellBase)) or (
                super().is_leaf_module(m, name)
            )

    net = nn.Sequential(fusedrnn.GRUCell(4, 6), nn.Linear(6, 2))
    graph = Leaves().trace(net)
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["0", "1"]
    cell = fusedrnn.RNNCell(4, 6)
    x = torch.randn(5, 4)
    eager = cell(x)
    counter = CompileCounter()
    cell.compile(backend=counter)
    torch.testing.assert_close(cell(x), eager)
    assert counter.frame_count == 1


@pytest.mark.parametrize("cls,shape,main", _CALL_CASES, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("with_hx", [False, True])
def test_fx_symbolic_trace_records_a_leaf_as_for_torch_nn(cls, shape, main, with_hx):
    """torch.fx.symbolic_trace with fx's default tracer: the module is one call_module node,
    as torch.nn's RNN modules and cells are (fx's leaves), not traced into; the GraphModule
    computes what the model does, gradients included."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(4, 6)
            self.head = nn.Linear(6, 2)

        def forward(self, x, h=None):
            return self.head(main(self.rnn(x, h) if with_hx else self.rnn(x)))

    torch.manual_seed(0)
    net = Net()
    gm = torch.fx.symbolic_trace(net)
    calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert calls == ["rnn", "head"]
    x = torch.randn(*shape, requires_grad=True)
    layer = len(shape) == 3
    h = torch.randn(1, 5, 6) if layer else torch.randn(5, 6)
    if with_hx and cls in (fusedrnn.LSTM, fusedrnn.LSTMCell, fusedrnn.LayerNormLSTM):
        h = (h, torch.zeros_like(h))
    args = (x, h) if with_hx else (x,)
    want, got = net(*args), gm(*args)
    assert torch.equal(got, want)
    (gx,) = torch.autograd.grad(got.sum(), x)
    (wx,) = torch.autograd.grad(net(*args).sum(), x)
    assert torch.equal(gx, wx)


@pytest.mark.parametrize("cls,shape,main", _CALL_CASES, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("traced_under", ["grad", "no_grad"])
def test_jit_trace_runs_in_either_grad_mode(cls, shape, main, traced_under):
    """torch.jit.trace (with its sanity check) in grad mode or under no_grad records the op
    itself, so the graph runs in either mode, with gradients, as torch.nn's traced modules:
    not the C++ autograd entry (the check failed) nor need_workspace=False (refused when run
    with gradients)."""
    torch.manual_seed(0)
    m = cls(4, 6)
    x = torch.randn(*shape)
    with torch.set_grad_enabled(traced_under == "grad"):
        traced = torch.jit.trace(m, (x,))
    assert "fusedrnn::" in str(traced.graph)
    with torch.no_grad():
        torch.testing.assert_close(main(traced(x)), main(m(x)))
    xg = x.clone().requires_grad_()
    got = torch.autograd.grad(main(traced(xg)).sum(), [xg, *m.parameters()], allow_unused=True)
    want = torch.autograd.grad(main(m(xg)).sum(), [xg, *m.parameters()], allow_unused=True)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


# ---- the cells' __call__ in C++ (modules._cell_call, cpp/module_call.cpp) --------------------
def _cell_call_ran(m, *args):
    """Whether _C.cell_call took this call (else None sends it down the Python path)."""
    return _C.cell_call(m, args) is not None


def _instance_forward_declined(m, ran, *args):
    """A forward set on the instance is what the call runs (the C++ front declines); once
    deleted, the front takes the call again."""
    m.forward = lambda input, hx=None: torch.zeros(1)
    assert not ran(m, *args) and torch.equal(m(*args), torch.zeros(1))
    del m.forward
    assert ran(m, *args)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cell_call_is_the_python_paths_call(cell, monkeypatch):
    """_C.cell_call takes the plain call, and its bits are the Python path's (positional
    and keyword arguments, hx given or not, no grad and with grad)."""
    _, m = _make(cell, 5, 33)
    x, hx = _inputs(cell, 3, 5, 33)
    assert _cell_call_ran(m, x, hx) and _cell_call_ran(m, x)
    with torch.no_grad():
        fast = [m(x, hx), m(x), m(input=x, hx=hx)]
    grad_fast = _flat(m(x, hx))[0]
    with monkeypatch.context() as mp:
        _slow(mp)
        with torch.no_grad():
            slow = [m(x, hx), m(x), m(input=x, hx=hx)]
        grad_slow = _flat(m(x, hx))[0]
    for a, b in zip(fast, slow):
        for u, v in zip(_flat(a), _flat(b)):
            assert torch.equal(u, v)
    assert torch.equal(grad_fast, grad_slow) and grad_fast.grad_fn is not None


def test_cell_call_reads_nonlinearity_on_every_call():
    """RNNCell's kind comes from ``nonlinearity`` as it is now; an unknown one is the Python
    path's error."""
    ref, m = _make("rnn", 4, 6)
    x, h = _inputs("rnn", 2, 4, 6)
    for nl in ("relu", "tanh", "relu"):
        m.nonlinearity = ref.nonlinearity = nl
        with torch.no_grad():
            torch.testing.assert_close(m(x, h), ref(x, h))
    m.nonlinearity = "gelu"
    assert not _cell_call_ran(m, x, h)
    with pytest.raises(RuntimeError, match="Unknown nonlinearity: gelu"):
        m(x, h)


def test_cell_call_declines_forward_overrides():
    """A forward of the instance or of a subclass is what the call runs."""
    _, m = _make("gru", 4, 6)
    x, h = _inputs("gru", 2, 4, 6)
    _instance_forward_declined(m, _cell_call_ran, x, h)

    class Doubled(fusedrnn.GRUCell):
        def forward(self, input, hx=None):
            return 2 * super().forward(input, hx)

    d = Doubled(4, 6)
    d.load_state_dict(m.state_dict())
    assert not _cell_call_ran(d, x, h)
    with torch.no_grad():
        torch.testing.assert_close(d(x, h), 2 * m(x, h))


def test_cell_call_declines_computed_weights():
    """A weight not in _parameters (a parametrisation computes it) is read by attribute on
    the Python path."""
    from torch.nn.utils import parametrize

    ref, m = _make("lstm", 4, 6)
    x, hx = _inputs("lstm", 2, 4, 6)

    class Halved(nn.Module):
        def forward(self, w):
            return w / 2

    parametrize.register_parametrization(m, "weight_hh", Halved())
    parametrize.register_parametrization(ref, "weight_hh", Halved())
    assert not _cell_call_ran(m, x, hx)
    with torch.no_grad():
        for a, b in zip(m(x, hx), ref(x, hx)):
            torch.testing.assert_close(a, b)


def test_cell_call_declines_forward_ad_and_onnx_export(monkeypatch):
    """An open forward-AD level and the dynamo ONNX exporter's flag, read from their modules
    on each call, send the call to the Python path (as _fast_path_open)."""
    import torch.autograd.forward_ad as fwAD

    _, m = _make("rnn", 4, 6)
    x, h = _inputs("rnn", 2, 4, 6)
    with fwAD.dual_level():
        assert not _cell_call_ran(m, x, h)
        dual = fwAD.make_dual(x, torch.ones_like(x))
        tangent = fwAD.unpack_dual(m(dual, h)).tangent
    assert tangent is not None and _cell_call_ran(m, x, h)
    if fusedrnn.deploy._onnx_flags is not None:
        monkeypatch.setattr(fusedrnn.deploy._onnx_flags, "_is_onnx_exporting", True)
        assert not _cell_call_ran(m, x, h)
        monkeypatch.undo()
        assert _cell_call_ran(m, x, h)


def test_cell_call_declines_hooks_compile_and_a_patched_module_call(monkeypatch):
    """Its own tests of what _lean_call tests (whose behaviour the tests above check)."""
    _, m = _make("lstm", 4, 6)
    x, hx = _inputs("lstm", 2, 4, 6)
    handle = m.register_forward_pre_hook(lambda mod, args: None)
    assert not _cell_call_ran(m, x, hx)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert not _cell_call_ran(m, x, hx)
    finally:
        handle.remove()
    assert _cell_call_ran(m, x, hx)
    monkeypatch.setattr(nn.Module, "__call__", lambda self, *a, **k: None)
    assert not _cell_call_ran(m, x, hx)
    monkeypatch.undo()
    m.compile(backend="eager")
    assert not _cell_call_ran(m, x, hx)


def test_cell_call_leaves_layernorm_cells_and_odd_arguments_alone():
    """The LayerNorm cells keep _lean_call; wrong argument counts get torch.nn's TypeError."""
    ln = fusedrnn.LayerNormLSTMCell(4, 6)
    x = torch.randn(2, 4)
    assert type(ln).__call__ is modules._lean_call and not _cell_call_ran(ln, x)
    ref, m = _make("gru", 4, 6)
    assert not _cell_call_ran(m) and not _cell_call_ran(m, x, None, None)
    for mod in (ref, m):
        with pytest.raises(TypeError):
            mod(x, None, None)
        with pytest.raises(TypeError):
            mod()


# ---- the stacks' __call__ in C++ (modules._stack_call, cpp/module_call.cpp) ------------------
def _stack_call_ran(m, *args):
    """Whether _C.stack_call took this call (else None sends it down the Python path)."""
    return _C.stack_call(m, args) is not None


@pytest.mark.parametrize("name", list(STACKS))
@pytest.mark.parametrize(
    "T,layers,bidir,batch_first,train",
    [(1, 1, False, False, False), (4, 2, True, True, False), (3, 2, False, False, True)],
)
def test_stack_call_is_the_python_paths_call(name, T, layers, bidir, batch_first, train,
                                             monkeypatch):  # fmt: skip
    """_C.stack_call takes the plain call (every stack, T = 1 single steps, batch_first,
    bidirectional, dropout in training under a seed), and its bits and gradients are the
    Python path's (hx given or not, keyword arguments, no grad and with grad)."""
    torch.manual_seed(0)
    m = STACKS[name](3, 7, num_layers=layers, bidirectional=bidir, batch_first=batch_first,
                     dropout=0.3 if layers > 1 else 0.0)  # fmt: skip
    m.train(train)
    x, hx = _stack_inputs(name, m, T, 2, torch.float32, batch_first=batch_first)
    assert _stack_call_ran(m, x, hx) and _stack_call_ran(m, x)

    def run():
        outs = []
        for args, kw in (((x, hx), {}), ((x,), {}), ((x,), {"hx": hx})):
            torch.manual_seed(1)
            with torch.no_grad():
                outs += _outs(m(*args, **kw))
        torch.manual_seed(1)
        out = _outs(m(x, hx))
        grads = torch.autograd.grad(sum(o.sum() for o in out), list(m.parameters()))
        return outs + out, grads

    # T = 1 through one layer and direction runs the cell op, whose weight-gradient sums are
    # not the stack op's (test_single_step_is_the_cell_op; equal bits on a Xeon, not on an
    # EPYC): there the Python path compared is the one through stack_step, which runs it too.
    single = T == 1 and layers == 1 and not bidir
    fast, grad_fast = run()
    with monkeypatch.context() as mp:
        if single:
            mp.setattr(modules._FusedRNNBase, "__call__", modules._lean_call)
        else:
            _slow(mp)
        slow, grad_slow = run()
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b)
    for a, b in zip(grad_fast, grad_slow):
        assert torch.equal(a, b)


def test_stack_call_declines_overrides_and_the_eager_twins():
    """A forward of the instance or of a subclass, a subclass's _fast_step (the eager
    LayerNorm twins return None there: they must stay eager) or _update_flat_weights: the
    Python path runs what the module says."""
    from fusedrnn.layernorm_eager import eager_twin

    torch.manual_seed(0)
    m = fusedrnn.GRU(4, 6)
    x, h = torch.randn(3, 2, 4), torch.randn(1, 2, 6)
    _instance_forward_declined(m, _stack_call_ran, x, h)

    class Doubled(fusedrnn.GRU):
        def forward(self, input, hx=None):
            out, hn = super().forward(input, hx)
            return 2 * out, hn

    class Counted(fusedrnn.GRU):
        updates = 0

        def _update_flat_weights(self):
            Counted.updates += 1
            super()._update_flat_weights()

    d, c = Doubled(4, 6), Counted(4, 6)
    d.load_state_dict(m.state_dict())
    c.load_state_dict(m.state_dict())
    assert not _stack_call_ran(d, x, h) and not _stack_call_ran(c, x, h)
    with torch.no_grad():
        torch.testing.assert_close(d(x, h)[0], 2 * m(x, h)[0])
        c(x, h)
    assert Counted.updates == 1
    ln = fusedrnn.LayerNormLSTM(4, 6)
    twin = eager_twin(ln)
    assert _stack_call_ran(ln, x) and not _stack_call_ran(twin, x)
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], ln(x)[0], rtol=1e-5, atol=1e-5)


def test_stack_call_declines_swapped_and_computed_weights():
    """A parameter replaced in _parameters itself (as a reparametrisation may) is not yet in
    _flat_weights: the Python path rebuilds the list (torch.nn's _update_flat_weights) and the
    next call is taken again; one assigned as an attribute is (nn.RNNBase.__setattr__). A
    parametrised weight is not in _parameters at all."""
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    ref = nn.LSTM(4, 6)
    m = fusedrnn.from_torch(ref)
    x = torch.randn(3, 2, 4)
    for swap in ("attribute", "dict"):
        new = nn.Parameter(torch.randn(24, 6))
        if swap == "dict":
            m._parameters["weight_hh_l0"] = new
        else:
            m.weight_hh_l0 = new
        ref.weight_hh_l0 = nn.Parameter(new.detach().clone())
        assert _stack_call_ran(m, x) == (swap == "attribute")
        with torch.no_grad():
            torch.testing.assert_close(m(x)[0], ref(x)[0])
        assert _stack_call_ran(m, x) and m._flat_weights[1] is new

    class Halved(nn.Module):
        def forward(self, w):
            return w / 2

    parametrize.register_parametrization(m, "weight_ih_l0", Halved())
    parametrize.register_parametrization(ref, "weight_ih_l0", Halved())
    assert not _stack_call_ran(m, x)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], ref(x)[0])


def test_stack_call_reads_mode_and_settings_on_every_call():
    """``mode``, ``training``, ``batch_first`` and ``dropout`` are read as they are now; an
    edited mode with no stack kind (or a setting of another type) goes to the Python path."""
    torch.manual_seed(0)
    ref = nn.RNN(4, 6, num_layers=2)
    m = fusedrnn.from_torch(ref)
    x = torch.randn(3, 2, 4)
    for mode, nl in (("RNN_RELU", "relu"), ("RNN_TANH", "tanh")):
        m.mode, ref.nonlinearity, ref.mode = mode, nl, mode
        assert _stack_call_ran(m, x)
        with torch.no_grad():
            torch.testing.assert_close(m(x)[0], ref(x)[0])
    m.batch_first = ref.batch_first = True
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], ref(x)[0])
    m.batch_first = ref.batch_first = False
    m.dropout = 1  # an int, as float() reads it: every layer-1 output dropped in training
    m.train()
    assert _stack_call_ran(m, x)
    with torch.no_grad():
        out = m(x)[0]
    h, want = torch.zeros(2, 6), []
    for _ in range(3):  # layer 2 on a zero input
        h = torch.tanh(m.bias_ih_l1 + m.bias_hh_l1 + h @ m.weight_hh_l1.T)
        want.append(h)
    torch.testing.assert_close(out, torch.stack(want).detach())
    m.dropout = "0.5"
    assert not _stack_call_ran(m, x)
    m.dropout = 0.0
    ln = fusedrnn.LayerNormGRU(4, 6)
    ln.mode = "RNN_TANH"  # no LayerNorm Elman stack
    assert not _stack_call_ran(ln, x)


def test_stack_call_declines_forward_ad_hooks_compile_and_a_patched_module_call(monkeypatch):
    """Its own tests of what _lean_call and _fast_path_open test."""
    import torch.autograd.forward_ad as fwAD

    m = fusedrnn.LSTM(4, 6)
    x = torch.randn(3, 2, 4)
    with fwAD.dual_level():
        assert not _stack_call_ran(m, x)
        dual = fwAD.make_dual(x, torch.ones_like(x))
        assert fwAD.unpack_dual(m(dual)[0]).tangent is not None
    assert _stack_call_ran(m, x)
    if fusedrnn.deploy._onnx_flags is not None:
        monkeypatch.setattr(fusedrnn.deploy._onnx_flags, "_is_onnx_exporting", True)
        assert not _stack_call_ran(m, x)
        monkeypatch.undo()
    handle = m.register_forward_hook(lambda *a: None)
    assert not _stack_call_ran(m, x)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None)
    try:
        assert not _stack_call_ran(m, x)
    finally:
        handle.remove()
    assert _stack_call_ran(m, x)
    monkeypatch.setattr(nn.Module, "__call__", lambda self, *a, **k: None)
    assert not _stack_call_ran(m, x)
    monkeypatch.undo()
    assert not _stack_call_ran(m) and not _stack_call_ran(m, x, None, None)
    with pytest.raises(TypeError):
        m(x, None, None)
    m.compile(backend="eager")
    assert not _stack_call_ran(m, x)
