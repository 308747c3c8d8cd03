"""LayerNorm LSTM / GRU (fusedrnn.LayerNormLSTM, LayerNormGRU and their cells).

The fused stack ops ``ln_lstm_stack`` / ``ln_gru_stack`` against the readable reference
(reference_torch: LayerNorm written with plain torch ops, autograd through it) in float64, over
family x layers x bidirectional x packed x hx x bias x batch_first and odd sizes, with the
LayerNorm weights moved away from their initial values; float64 gradcheck / gradgradcheck,
torch.library.opcheck, torch.compile(fullgraph=True), the module contract (parameter names,
initialisation, state_dict, errors) and float32 accuracy."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn
from fusedrnn import _ops, layernorm, reference_torch

from op_cases import batch_sizes_for, lengths_for
from op_cases import ln_module as _module

ops = torch.ops.fusedrnn
CLS = {"ln_lstm": fusedrnn.LayerNormLSTM, "ln_gru": fusedrnn.LayerNormGRU}
MODE = {"ln_lstm": "LN_LSTM", "ln_gru": "LN_GRU"}


def _reference(m, x, bs, h0, c0):
    fam = "ln_lstm" if m.mode == "LSTM" else "ln_gru"
    return layernorm.reference_stack(
        fam, x, bs, h0, c0, m._flat_weights, num_layers=m.num_layers,
        bidirectional=m.bidirectional, has_biases=m.bias, dropout=0.0, train=False,
    )  # fmt: skip


GRID = [
    (fam, L, bidir, packed, hx, bias)
    for fam in CLS
    for L, bidir in ((1, False), (2, True), (3, False))
    for packed, hx, bias in ((False, True, True), (True, False, False), (False, False, True))
]


def _id(c):
    fam, L, bidir, packed, hx, bias = c
    return f"{fam}-L{L}{'-bi' if bidir else ''}{'-packed' if packed else ''}" + (
        f"{'-hx' if hx else ''}{'' if bias else '-nobias'}"
    )


def _inputs(fam, L, bidir, packed, hx, B, T, I, H, dtype=torch.float64):
    D = 2 if bidir else 1
    bs = batch_sizes_for(lengths_for(B, T)) if packed else None
    x = torch.randn(int(bs.sum()), I) if packed else torch.randn(T, B, I)
    x = x.to(dtype).requires_grad_()
    h0 = torch.randn(L * D, B, H, dtype=dtype, requires_grad=True) if hx else None
    c0 = (
        torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)
        if hx and fam == "ln_lstm"
        else None
    )
    return x, bs, h0, c0


@pytest.mark.parametrize("case", GRID, ids=_id)
# B = 6: one group of 4 rows in lockstep (ln_pointwise.h) and a tail of 2; packed, 6 to 1 rows.
# The input side's routes (ln_driver.h): I*I <= G*H takes the closed form (layer 0 of all
# but (1, 1, 5, 1)), with I = 1 inside the CPU step (5, 3, 1, 7); a wider input the LN rows
# pass (layers above, when D*H is wide enough).
@pytest.mark.parametrize(
    "B,T,I,H", [(3, 4, 2, 3), (1, 1, 5, 1), (2, 3, 3, 33), (6, 4, 2, 5), (5, 3, 1, 7)]
)
def test_stack_matches_reference_with_gradients(case, B, T, I, H):
    fam, L, bidir, packed, hx, bias = case
    m = _module(fam, I, H, L, bidir, bias)
    x, bs, h0, c0 = _inputs(fam, L, bidir, packed, hx, B, T, I, H)
    got = m._stack(x, bs, h0, c0)
    want = _reference(m, x, bs, h0, c0)
    outs = [t for t in got if t is not None]
    refs = [t for t in want if t is not None]
    torch.testing.assert_close(outs, refs, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # inference: no workspace, rows in groups of 4 (ln_pointwise.h)
        inf = [t for t in m._stack(x, bs, h0, c0) if t is not None]
    torch.testing.assert_close(inf, refs, rtol=1e-10, atol=1e-12)
    leaves = [t for t in (x, h0, c0, *m.parameters()) if t is not None]
    cots = [torch.randn_like(t) for t in outs]
    g1 = torch.autograd.grad(outs, leaves, cots)
    g2 = torch.autograd.grad(refs, leaves, cots)
    for a, b, n in zip(g1, g2, ["x", "h0", "c0", *[n for n, _ in m.named_parameters()]]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"gradient of {n}")


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_module_forward_like_torch_nn(fam, batch_first):
    """PackedSequence (unsorted), unbatched input, hx given and batch_first: the reference with
    torch.nn's input handling."""
    m = _module(fam, 4, 5, 2, True, batch_first=batch_first)
    x = torch.randn(3, 6, 4, dtype=torch.float64)  # [B, T, I] if batch_first
    xs = x if batch_first else x.transpose(0, 1)
    out, hid = m(xs)
    ref = _reference(m, x.transpose(0, 1), None, None, None)
    want = ref[0].transpose(0, 1) if batch_first else ref[0]
    torch.testing.assert_close(out, want)
    lengths = torch.tensor([4, 6, 2])
    packed = pack_padded_sequence(xs, lengths, batch_first=batch_first, enforce_sorted=False)
    pout, phid = m(packed)
    assert isinstance(pout, PackedSequence)
    for b in range(3):  # each sequence alone gives the same final state
        xb = x[b : b + 1, : lengths[b]]
        _, hb = m(xb if batch_first else xb.transpose(0, 1))
        h_all = phid[0] if fam == "ln_lstm" else phid
        h_one = hb[0] if fam == "ln_lstm" else hb
        torch.testing.assert_close(h_all[:, b], h_one[:, 0])
    uout, uhid = m(x[0] if True else None)  # unbatched [T, I]
    bout, bhid = m(x[:1] if batch_first else x[:1].transpose(0, 1))
    torch.testing.assert_close(uout, bout[0] if batch_first else bout[:, 0])
    hx = (torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(4, 3, 5, dtype=torch.float64))
    state = hx if fam == "ln_lstm" else hx[0]
    out2, _ = m(xs, state)
    ref2 = _reference(m, x.transpose(0, 1), None, hx[0], hx[1] if fam == "ln_lstm" else None)
    torch.testing.assert_close(out2, ref2[0].transpose(0, 1) if batch_first else ref2[0])


@pytest.mark.parametrize("fam", list(CLS))
def test_parameters_names_shapes_and_init(fam):
    m = CLS[fam](3, 5, num_layers=2, bidirectional=True)
    G = 4 if fam == "ln_lstm" else 3
    names = dict(m.named_parameters())
    for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        assert names[f"layernorm_ih_weight{sfx}"].shape == (G * 5,)
        assert names[f"layernorm_hh_weight{sfx}"].shape == (G * 5,)
        assert torch.equal(names[f"layernorm_hh_weight{sfx}"], torch.ones(G * 5))
        assert names[f"weight_ih{sfx}"].shape == (G * 5, 3 if sfx.startswith("_l0") else 10)
        if fam == "ln_lstm":
            assert torch.equal(names[f"layernorm_c_weight{sfx}"], torch.ones(5))
            assert torch.equal(names[f"layernorm_c_bias{sfx}"], torch.zeros(5))
        else:
            assert f"layernorm_c_weight{sfx}" not in names
    assert names["weight_hh_l0"].abs().max() <= 1 / 5**0.5
    nobias = dict(CLS[fam](3, 5, bias=False).named_parameters())
    assert "bias_ih_l0" not in nobias and "layernorm_c_bias_l0" not in nobias
    # state_dict round trip into a fresh module gives the same outputs
    m2 = CLS[fam](3, 5, num_layers=2, bidirectional=True)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(m(x)[0], m2(x)[0])


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("bias", [True, False])
def test_cells_match_reference_step(fam, bias):
    cls = fusedrnn.LayerNormLSTMCell if fam == "ln_lstm" else fusedrnn.LayerNormGRUCell
    torch.manual_seed(3)
    cell = cls(4, 7, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        for n, p in cell.named_parameters():
            if n.startswith("layernorm_"):
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    c = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    b = (cell.bias_ih, cell.bias_hh) if bias else (None, None)
    if fam == "ln_lstm":
        got = cell(x, (h, c))
        want = reference_torch.ln_lstm_step(
            x, h, c, cell.weight_ih, cell.weight_hh, *b, cell.layernorm_ih_weight,
            cell.layernorm_hh_weight, cell.layernorm_c_weight, cell.layernorm_c_bias,
        )  # fmt: skip
        leaves = [x, h, c, *cell.parameters()]
    else:
        got = (cell(x, h),)
        want = (reference_torch.ln_gru_step(x, h, cell.weight_ih, cell.weight_hh, *b,
                                            cell.layernorm_ih_weight, cell.layernorm_hh_weight),)  # fmt: skip
        leaves = [x, h, *cell.parameters()]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    cots = [torch.randn_like(t) for t in got]
    for a, r in zip(
        torch.autograd.grad(got, leaves, cots), torch.autograd.grad(want, leaves, cots)
    ):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
    # unbatched and hx=None (zeros) as torch.nn's cells
    one = cell(x[0])
    zeros = torch.zeros(1, 7, dtype=torch.float64)
    full = cell(x[:1], (zeros, zeros) if fam == "ln_lstm" else zeros)
    if fam == "ln_lstm":
        torch.testing.assert_close(one, (full[0][0], full[1][0]))
    else:
        torch.testing.assert_close(one, full[0])


def _op_args(fam, L, bidir, packed, hx, bias, B=2, T=3, I=2, H=3, dropout=0.0, train=False):
    m = _module(fam, I, H, L, bidir, bias)
    x, bs, h0, c0 = _inputs(fam, L, bidir, packed, hx, B, T, I, H)
    w = [p.detach().requires_grad_() for p in m._flat_weights]
    return x, bs, h0, c0, w, bias, L, bidir, dropout, train


@pytest.mark.parametrize("case", GRID[::2], ids=_id)
@pytest.mark.parametrize("I", [1, 2])  # the input side inside the step, the closed form's GEMM
def test_stack_gradcheck(case, I):
    fam, L, bidir, packed, hx, bias = case
    x, bs, h0, c0, w, *_ = _op_args(fam, L, bidir, packed, hx, bias, I=I, H=2)
    n_w = len(w)
    states = [t for t in (h0, c0) if t is not None]

    def f(x, *rest):
        ws, st = list(rest[:n_w]), list(rest[n_w:])
        h = st[0] if h0 is not None else None
        c = st[1] if c0 is not None else None
        out, h_n, c_n = _ops.stack(MODE[fam], x, ws, num_layers=L, bidirectional=bidir,
                                   has_biases=bias, hx=h, cx=c, batch_sizes=bs)  # fmt: skip
        return (out, h_n) + ((c_n,) if c_n is not None else ())

    assert torch.autograd.gradcheck(f, (x, *w, *states), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", [GRID[0], GRID[4], GRID[-4], GRID[-1]], ids=_id)
def test_stack_gradgradcheck(case):
    fam, L, bidir, packed, hx, bias = case
    x, bs, h0, c0, w, *_ = _op_args(fam, L, bidir, packed, hx, bias, T=2, H=2)

    def f(x, *ws):
        out, h_n, _ = _ops.stack(MODE[fam], x, list(ws), num_layers=L, bidirectional=bidir,
                                 has_biases=bias, hx=h0, cx=c0, batch_sizes=bs)  # fmt: skip
        return out, h_n

    assert torch.autograd.gradgradcheck(f, (x, *w), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("case", [GRID[0], GRID[4], GRID[-1]], ids=_id)
def test_training_step_takes_the_cpp_autograd_entry(case):
    """The modules' training steps run the C++ autograd node (cpp/autograd.cpp): the same
    gradients as the ops' Python autograd.Function, the biases not saved (edited in place
    before backward, as torch.nn allows), and gradients of gradients through it."""
    from fusedrnn import _autograd

    fam, L, bidir, packed, hx, bias = case
    m = _module(fam, 2, 3, L, bidir, bias)
    x, bs, h0, c0 = _inputs(fam, L, bidir, packed, hx, 2, 3, 2, 3)
    leaves = [t for t in (x, h0, c0, *m.parameters()) if t is not None]
    args = (x, bs, h0, c0, m._flat_weights, bias, L, bidir, 0.0, False, True)

    def grads(run, edit_bias=False, create_graph=False):
        out = run()
        if edit_bias:
            with torch.no_grad():
                m.bias_ih_l0.add_(1.0)
        g = torch.autograd.grad(out.pow(2).sum(), leaves, create_graph=create_graph)
        if edit_bias:
            with torch.no_grad():
                m.bias_ih_l0.sub_(1.0)
        return g

    cpp = lambda: m._stack(x, bs, h0, c0)[0]  # noqa: E731
    py = lambda: _autograd.apply(f"{fam}_stack", *args)[0]  # noqa: E731
    with torch.profiler.profile() as prof:
        g_cpp = grads(cpp, edit_bias=bias)
    assert any("StackFunction" in e.name for e in prof.events())
    for a, b in zip(g_cpp, grads(py)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    gg = [
        torch.autograd.grad(sum(g.pow(2).sum() for g in grads(run, create_graph=True)), x)[0]
        for run in (cpp, py)
    ]
    torch.testing.assert_close(gg[0], gg[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fam", list(CLS))
def test_dropout_under_seed_and_gradcheck(fam):
    """Dropout between layers draws like F.dropout: the reference with the same seed gives the
    same output; gradients through the masks are exact."""
    m = _module(fam, 2, 2, 3, True, dropout=0.4)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    w = [p.detach().requires_grad_() for p in m._flat_weights]

    def f(x, *ws):
        torch.manual_seed(5)
        out, h_n, _ = _ops.stack(
            MODE[fam], x, list(ws), num_layers=3, bidirectional=True, dropout=0.4, train=True
        )
        return out, h_n

    torch.manual_seed(5)
    ref = layernorm.reference_stack(fam, x, None, None, None, w, num_layers=3, bidirectional=True,
                                    has_biases=True, dropout=0.4, train=True)  # fmt: skip
    torch.testing.assert_close(f(x, *w)[0], ref[0], rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(f, (x, *w), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", GRID[::3], ids=_id)
@pytest.mark.parametrize("I", [1, 2])
def test_stack_opcheck(case, I):
    fam, L, bidir, packed, hx, bias = case
    args = _op_args(fam, L, bidir, packed, hx, bias, I=I)
    fwd, bwd = getattr(ops, f"{fam}_stack"), getattr(ops, f"{fam}_stack_backward")
    torch.library.opcheck(fwd, args)
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


@pytest.mark.parametrize("fam", list(CLS))
def test_compile_fullgraph_forward_and_backward(fam):
    m = _module(fam, 3, 4, 2, True, dtype=torch.float32)
    x = torch.randn(5, 2, 3)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out, _ = compiled(x)
    out.sum().backward()
    g_c = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    ref, _ = m(x)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    for a, p in zip(g_c, m.parameters()):
        torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("H", [16, 33, 64])
@pytest.mark.parametrize("I", [1, 7])
def test_float32_close_to_float64(fam, H, I):
    m64 = _module(fam, I, H, 2, False)
    m32 = _module(fam, I, H, 2, False, dtype=torch.float32)
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = torch.randn(20, 9, I, dtype=torch.float64)
    out64, _ = m64(x)
    out32, _ = m32(x.float())
    out32.sum().backward()
    out64.sum().backward()
    assert (out32.double() - out64).abs().max() < 2e-5
    for (n, a), b in zip(m32.named_parameters(), m64.parameters()):
        err = (a.grad.double() - b.grad).abs().max() / b.grad.abs().max().clamp_min(1e-3)
        assert err < 1e-4, n


@pytest.mark.parametrize("cls", [fusedrnn.LayerNormLSTM, fusedrnn.LayerNormGRU])
def test_positional_arguments_of_torch_nn_pass_through(cls):
    """nn.LSTM / nn.GRU's positional order, proj_size (0) eighth: positional code written for
    them builds the same module; for the LSTM proj_size=0 (nn.LSTM's default) is accepted by
    name too, any projection refused."""
    m = cls(5, 6, 2, False, True, 0.0, True, 0)
    assert (m.num_layers, m.bias, m.batch_first, m.bidirectional) == (2, False, True, True)
    if cls is fusedrnn.LayerNormLSTM:
        assert cls(5, 6, proj_size=0).proj_size == 0
    with pytest.raises(ValueError, match="proj_size"):
        cls(5, 6, 1, True, False, 0.0, False, 3)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="proj_size"):
        fusedrnn.LayerNormLSTM(3, 4, proj_size=2)
    m = fusedrnn.LayerNormLSTM(3, 4)
    with pytest.raises(TypeError, match="hx"):
        m(torch.randn(2, 1, 3), torch.zeros(1, 1, 4))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        m(torch.randn(2, 1, 5))
    with pytest.raises(TypeError, match="no torch.nn equivalent"):
        m.to_torch()
    w = list(m._flat_weights)
    w[4] = torch.ones(3)  # layernorm_ih_weight of the wrong size
    with pytest.raises(RuntimeError, match=r"ln_ih of shape \[G\*H\]"):
        ops.ln_lstm_stack(torch.randn(2, 1, 3), None, None, None, w, True, 1, False, 0.0, False)
    with pytest.raises(RuntimeError, match="weights per layer"):
        ops.ln_lstm_stack(torch.randn(2, 1, 3), None, None, None, w[:5], True, 1, False, 0.0, False)


def test_half_precision_falls_back_to_the_reference_with_a_warning(monkeypatch):
    m = _module("ln_gru", 3, 4, dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    want, _ = m(x)
    m16 = m.to(torch.bfloat16)
    monkeypatch.setattr(fusedrnn.modules, "_warned", set())
    with pytest.warns(UserWarning, match="reference implementation") as caught:
        got, _ = m16(x.to(torch.bfloat16))
    assert caught[0].filename == __file__  # points at the caller's line
    assert (got.double() - want).abs().max() < 0.05


@pytest.mark.parametrize("fam", list(CLS))
def test_function_transforms_match_the_reference(fam):
    """jvp, vmap and grad of functional_call: the fused modules as the reference computes."""
    m = _module(fam, 3, 4, 2, True)
    params = dict(m.named_parameters())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    tx = torch.randn_like(x)

    def fused(x):
        return m(x)[0]

    def ref(x):
        return _reference(m, x, None, None, None)[0]

    out, tan = torch.func.jvp(fused, (x,), (tx,))
    rout, rtan = torch.func.jvp(ref, (x,), (tx,))
    torch.testing.assert_close((out, tan), (rout, rtan), rtol=1e-10, atol=1e-12)
    xs = torch.randn(3, 5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(fused)(xs), torch.stack([ref(v) for v in xs]))

    def loss(p, x):
        return torch.func.functional_call(m, p, (x,))[0].square().sum()

    g = torch.func.grad(loss)(params, x)
    rg = torch.autograd.grad(ref(x).square().sum(), list(params.values()))
    for (n, a), b in zip(g.items(), rg):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=n)


@pytest.mark.parametrize("fam", list(CLS))
def test_export_in_eval_mode(fam):
    m = _module(fam, 3, 4, 2, False, dtype=torch.float32).eval()
    x = torch.randn(6, 2, 3)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x)[0], m(x)[0])
    names = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any(f"{fam}_stack" in n for n in names), names


@pytest.mark.parametrize("fam", list(CLS))
def test_mid_size_float64_matches_reference(fam):
    """The bench's mid shape (H=256, I=128, T=100; fewer rows): exact in float64, so the float32
    differences the bench tolerates there (bench/measure.py TOLERANCE_LAYERNORM) are rounding."""
    m = _module(fam, 128, 256)
    x = torch.randn(100, 4, 128, dtype=torch.float64, requires_grad=True)
    out, _ = m(x)
    ref = _reference(m, x, None, None, None)[0]
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-11)
    g = torch.autograd.grad(out.sum(), [x, *m.parameters()])
    r = torch.autograd.grad(ref.sum(), [x, *m.parameters()])
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("fam", list(CLS))
@pytest.mark.parametrize("I", [1, 3])
def test_sine_size_float64_matches_reference(fam, I):
    """A narrow input over at least 2^20 input-side values (N * G*H; the bench's sine shape has
    H=32, B=784, T=20): the input side's backward takes its closed form (ln_driver.h,
    closed_input_backward), x's gradient included; I = 1 also runs inside the CPU step."""
    H, B, T = 32, 256, 44 if fam == "ln_lstm" else 60  # N * G*H >= 2^20
    m = _module(fam, I, H)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    out, _ = m(x)
    ref = _reference(m, x, None, None, None)
    torch.testing.assert_close(out, ref[0], rtol=1e-9, atol=1e-11)
    cot = torch.randn_like(out)
    g = torch.autograd.grad(out, [x, *m.parameters()], cot)
    r = torch.autograd.grad(ref[0], [x, *m.parameters()], cot)
    for a, b, n in zip(g, r, ["x", *[n for n, _ in m.named_parameters()]]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=f"gradient of {n}")
