"""The whole-stack ops (``fusedrnn::{family}_stack``): every layer and direction in one call.

Checked against torch.nn (same flat weights), with float64 gradcheck / gradgradcheck and
torch.library.opcheck, over family x layers x bidirectional x proj_size x packed x hx x bias,
and dropout under a fixed seed (the masks are torch.nn's: same generator, same draws)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import _ops

from op_cases import batch_sizes_for, lengths_for

ops = torch.ops.fusedrnn
MODES = {"rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "lstm": "LSTM", "gru": "GRU"}


def _torch_module(fam, I, H, L, bidir, bias, proj, dropout=0.0):
    kw = dict(num_layers=L, bidirectional=bidir, bias=bias, dropout=dropout, dtype=torch.float64)
    if fam == "lstm":
        return nn.LSTM(I, H, proj_size=proj, **kw)
    if fam == "gru":
        return nn.GRU(I, H, **kw)
    return nn.RNN(I, H, nonlinearity=fam.split("_")[1], **kw)


def _case(fam, L, bidir, proj, packed, hx, bias, B=3, T=4, I=2, H=3, dropout=0.0):
    torch.manual_seed(1)
    mod = _torch_module(fam, I, H, L, bidir, bias, proj, dropout)
    D = 2 if bidir else 1
    P = proj or H
    bs = batch_sizes_for(lengths_for(B, T)) if packed else None
    x = torch.randn(int(bs.sum()), I) if packed else torch.randn(T, B, I)
    x = x.double().requires_grad_()
    h0 = torch.randn(L * D, B, P, dtype=torch.float64, requires_grad=True) if hx else None
    c0 = (
        torch.randn(L * D, B, H, dtype=torch.float64, requires_grad=True)
        if hx and fam == "lstm"
        else None
    )
    return mod, x, bs, h0, c0


def _stack_args(fam, mod, x, bs, h0, c0, dropout=0.0, train=False):
    return (x, bs, h0, c0, list(mod._flat_weights), mod.bias, mod.num_layers, mod.bidirectional,
            dropout, train)  # fmt: skip


GRID = [
    (fam, L, bidir, proj, packed, hx, bias)
    for fam in MODES
    for L, bidir in ((1, False), (2, True), (3, False))
    for proj in ((0, 2) if fam == "lstm" else (0,))
    for packed, hx, bias in ((False, True, True), (True, False, False))
]


def _id(c):
    fam, L, bidir, proj, packed, hx, bias = c
    return f"{fam}-L{L}{'-bi' if bidir else ''}-P{proj}{'-packed' if packed else ''}" + (
        f"{'-hx' if hx else ''}{'' if bias else '-nobias'}"
    )


@pytest.mark.parametrize("case", GRID, ids=_id)
def test_stack_matches_torch_nn(case):
    fam, L, bidir, proj, packed, hx, bias = case
    mod, x, bs, h0, c0 = _case(fam, L, bidir, proj, packed, hx, bias, H=5 if proj else 3)
    out, h_n, c_n = _ops.stack(MODES[fam], x, list(mod._flat_weights), num_layers=L,
                               bidirectional=bidir, has_biases=bias, hx=h0, cx=c0,
                               batch_sizes=bs)  # fmt: skip
    if packed:
        from torch.nn.utils.rnn import PackedSequence

        inp = PackedSequence(x, bs)
    else:
        inp = x
    state = None if h0 is None else ((h0, c0) if fam == "lstm" else h0)
    ref_out, ref_h = mod(inp, state)
    ref_out = ref_out.data if packed else ref_out
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    if fam == "lstm":
        torch.testing.assert_close((h_n, c_n), ref_h, rtol=1e-10, atol=1e-12)
    else:
        torch.testing.assert_close(h_n, ref_h, rtol=1e-10, atol=1e-12)
        assert c_n is None


@pytest.mark.parametrize("case", GRID, ids=_id)
def test_stack_gradcheck(case):
    fam, L, bidir, proj, packed, hx, bias = case
    mod, x, bs, h0, c0 = _case(fam, L, bidir, proj, packed, hx, bias, B=2, T=3, H=4 if proj else 2)
    weights = [w.detach().requires_grad_() for w in mod._flat_weights]
    n_w = len(weights)
    states = [t for t in (h0, c0) if t is not None]

    def f(x, *rest):
        ws, st = list(rest[:n_w]), list(rest[n_w:])
        h = st[0] if h0 is not None else None
        c = st[1] if c0 is not None else None
        out, h_n, c_n = _ops.stack(MODES[fam], x, ws, num_layers=L, bidirectional=bidir,
                                   has_biases=bias, hx=h, cx=c, batch_sizes=bs)  # fmt: skip
        return (out, h_n) + ((c_n,) if c_n is not None else ())

    assert torch.autograd.gradcheck(f, (x, *weights, *states), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("fam", list(MODES))
def test_stack_dropout_gradcheck_and_masks_of_torch_nn(fam):
    """Dropout between layers under a fixed seed: the same masks as torch.nn in training mode,
    and exact gradients through them."""
    mod, x, bs, h0, c0 = _case(fam, 3, True, 0, False, True, True, B=2, T=3, H=2, dropout=0.4)
    mod.train()
    weights = [w.detach().requires_grad_() for w in mod._flat_weights]

    def f(x, *ws):
        torch.manual_seed(5)
        out, h_n, c_n = _ops.stack(MODES[fam], x, list(ws), num_layers=3, bidirectional=True,
                                   hx=h0, cx=c0, dropout=0.4, train=True)  # fmt: skip
        return out, h_n

    torch.manual_seed(5)
    ref_out, _ = mod(x, (h0, c0) if fam == "lstm" else h0)
    out, _ = f(x, *weights)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(f, (x, *weights), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", [GRID[0], GRID[3], GRID[-3], GRID[-1]], ids=_id)
def test_stack_gradgradcheck(case):
    fam, L, bidir, proj, packed, hx, bias = case
    mod, x, bs, h0, c0 = _case(fam, L, bidir, proj, packed, hx, bias, B=2, T=2, H=3 if proj else 2)
    weights = [w.detach().requires_grad_() for w in mod._flat_weights]

    def f(x, *ws):
        out, h_n, _ = _ops.stack(MODES[fam], x, list(ws), num_layers=L, bidirectional=bidir,
                                 has_biases=bias, hx=h0, cx=c0, batch_sizes=bs)  # fmt: skip
        return out, h_n

    assert torch.autograd.gradgradcheck(f, (x, *weights), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "case,dropout", [(c, d) for c, d in itertools.product(GRID[::3], (0.0, 0.5))], ids=str
)
def test_stack_opcheck(case, dropout):
    fam, L, bidir, proj, packed, hx, bias = case
    mod, x, bs, h0, c0 = _case(fam, L, bidir, proj, packed, hx, bias, H=5 if proj else 3)
    fwd, bwd = getattr(ops, f"{fam}_stack"), getattr(ops, f"{fam}_stack_backward")
    train = dropout > 0
    args = _stack_args(fam, mod, x, bs, h0, c0, dropout, train)
    if not train:  # a random op's eager and traced calls draw different masks
        torch.library.opcheck(fwd, args)
    else:
        torch.library.opcheck(
            fwd, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
        )
    out, h_n, c_n, saved = fwd(*args)
    g = [
        torch.randn_like(out),
        torch.randn_like(h_n),
        torch.randn_like(c_n) if c_n.numel() else None,
    ]
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    plain[4] = [w.detach() for w in plain[4]]
    bargs = (*g, *plain[:8], out.detach(), [s.detach() for s in saved])
    torch.library.opcheck(bwd, bargs)
    torch.library.opcheck(bwd, (*bargs, False))


def test_stack_rejects_bad_arguments_naming_them():
    mod, x, bs, h0, c0 = _case("lstm", 2, False, 0, False, True, True)
    w = list(mod._flat_weights)
    with pytest.raises(RuntimeError, match="num_layers"):
        ops.lstm_stack(x, None, h0, c0, w, True, 0, False, 0.0, False)
    with pytest.raises(RuntimeError, match="weights per layer"):
        ops.lstm_stack(x, None, h0, c0, w[:-1], True, 2, False, 0.0, False)
    with pytest.raises(RuntimeError, match="hx"):
        ops.lstm_stack(x, None, h0[:1], c0, w, True, 2, False, 0.0, False)
    with pytest.raises(RuntimeError, match="dropout"):
        ops.lstm_stack(x, None, h0, c0, w, True, 2, False, 1.5, True)
    with pytest.raises(RuntimeError, match="cx is only for LSTM"):
        g = nn.GRU(2, 3, 2).double()
        ops.gru_stack(x, None, None, c0, list(g._flat_weights), True, 2, False, 0.0, False)


def test_module_forward_is_one_op_call():
    """The modules run every layer and direction through one stack op call."""
    m = fusedrnn.LSTM(2, 3, num_layers=3, bidirectional=True)
    x = torch.randn(4, 2, 2, requires_grad=True)
    with torch.profiler.profile() as prof:
        m(x)[0].sum().backward()
    names = [e.name for e in prof.events()]
    assert names.count("fusedrnn::lstm_stack") == 1  # one forward call for the whole stack
    assert names.count("fusedrnn::lstm_stack_backward") == 1
    assert not [n for n in names if "_layer" in n or "dropout" in n]
    packed = pack_padded_sequence(torch.randn(4, 2, 2), torch.tensor([4, 2]))
    assert m(packed)[0].data.shape == (6, 6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_module_training_autograd_in_cpp_matches_python_and_double_backward(kind):
    """The modules' training steps take the C++ autograd entry points (*_autograd): same
    gradients as the Python autograd.Function of the ops, and gradients of gradients."""
    torch.manual_seed(0)
    fam = {"lstm": "lstm", "gru": "gru", "rnn_relu": "rnn_relu"}[kind]
    mod, x, bs, h0, c0 = _case(fam, 2, True, 0, False, True, True, B=2, T=3, H=3)
    fused = fusedrnn.from_torch(mod)
    state = (h0, c0) if fam == "lstm" else h0
    out = fused(x, state)[0]
    with torch.profiler.profile() as prof:
        g_cpp = torch.autograd.grad(out.pow(2).sum(), [x, *fused.parameters()], create_graph=True)
    assert any("Function" in e.name and "Stack" in e.name for e in prof.events())
    args = _stack_args(fam, fused, x, None, h0, c0)
    py = _autograd_apply(f"{fam}_stack", *args, True)[0]
    g_py = torch.autograd.grad(py.pow(2).sum(), [x, *fused.parameters()])
    for a, b in zip(g_cpp, g_py):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    # double backward through the C++ node: d/dx of |grad|^2 against torch.nn
    gg = torch.autograd.grad(sum(g.pow(2).sum() for g in g_cpp), x)[0]
    ref_out = mod(x, state)[0]
    ref_g = torch.autograd.grad(ref_out.pow(2).sum(), [x, *mod.parameters()], create_graph=True)
    ref_gg = torch.autograd.grad(sum(g.pow(2).sum() for g in ref_g), x)[0]
    torch.testing.assert_close(gg, ref_gg, rtol=1e-9, atol=1e-11)


def _autograd_apply(name, *args):
    from fusedrnn import _autograd

    return _autograd.apply(name, *args)


def test_bias_edited_in_place_before_backward_like_torch_nn():
    """Biases are not saved for backward (as torch.nn): editing one before backward() is
    legal and gives the gradients of the unedited forward."""
    torch.manual_seed(0)
    ref = nn.LSTM(2, 3, 2, dtype=torch.float64)
    fused = fusedrnn.from_torch(ref)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for m in (ref, fused):
        out = m(x)[0].sum()
        with torch.no_grad():
            m.bias_ih_l0.add_(1.0)
        grads.append(torch.autograd.grad(out, [x, *m.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
