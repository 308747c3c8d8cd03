"""The layer and cell ops against torch.nn (same weights): outputs, final states, input and
every parameter gradient; float64 tight, float32 within 1e-5 relative; long sequences and
wide hidden sizes; packed input and the reverse direction (via bidirectional torch.nn)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn

from op_cases import FAMILIES, lengths_for, make_layer_case

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=2e-6)}


def _nn_module(family, I, H, bias, proj, bidirectional, dtype):
    if family == "lstm":
        m = torch.nn.LSTM(I, H, bias=bias, proj_size=proj, bidirectional=bidirectional)
    elif family == "gru":
        m = torch.nn.GRU(I, H, bias=bias, bidirectional=bidirectional)
    else:
        m = torch.nn.RNN(
            I, H, nonlinearity=family.split("_")[1], bias=bias, bidirectional=bidirectional
        )
    return m.to(dtype)


def _fused_direction(family, m, x, h0, c0, suffix, batch_sizes, reverse):
    p = lambda n: getattr(m, f"{n}_l0{suffix}", None)  # noqa: E731
    args = (x, p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"))
    kw = dict(h0=h0, batch_sizes=batch_sizes, reverse=reverse)
    if family == "lstm":
        return fusedrnn.lstm_layer(*args, w_hr=p("weight_hr"), c0=c0, **kw)
    if family == "gru":
        return fusedrnn.gru_layer(*args, **kw)
    return fusedrnn.rnn_layer(*args, nonlinearity=family.split("_")[1], **kw)


def _compare(a, b, dtype, what):
    """float64: tight elementwise. float32: within 1e-5 relative to the tensor's scale (sums
    over 100+ steps are reassociated, so entries near zero carry the rounding of big ones)."""
    tol = dict(TOL[dtype])
    if dtype == torch.float32 and b.numel():
        tol["atol"] = max(tol["atol"], 1e-5 * b.abs().max().item())
    torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("family", FAMILIES + ["lstm_proj"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("T,B,I,H", [(7, 3, 4, 5), (1, 1, 1, 1), (120, 4, 16, 130)])
def test_parity_with_torch_nn(family, dtype, packed, T, B, I, H):
    proj = 0
    if family == "lstm_proj":
        family, proj = "lstm", max(1, H // 3)
        if H < 2:
            pytest.skip("proj_size needs H >= 2")
    bias = T != 1  # also cover bias=False
    m = _nn_module(family, I, H, bias, proj, True, dtype)
    P = proj or H
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(2, B, P, dtype=dtype, requires_grad=True)
    c0 = torch.randn(2, B, H, dtype=dtype, requires_grad=True)
    lengths = lengths_for(B, T)
    if packed:
        seq = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=True)
        data, bs = seq.data, seq.batch_sizes
    else:
        seq, data, bs = x, x, None
    hx = (h0, c0) if family == "lstm" else h0
    y, hn = m(seq, hx)
    y = y.data if packed else y
    fused = []
    for d, suffix in enumerate(["", "_reverse"]):
        fused.append(_fused_direction(family, m, data, h0[d], c0[d], suffix, bs, reverse=bool(d)))
    y_f = torch.cat([fused[0][0], fused[1][0]], -1)
    _compare(y_f, y, dtype, "output")
    hn_t = hn[0] if family == "lstm" else hn
    _compare(torch.stack([fused[0][1], fused[1][1]]), hn_t, dtype, "h_n")
    if family == "lstm":
        _compare(torch.stack([fused[0][2], fused[1][2]]), hn[1], dtype, "c_n")

    # Gradients of a loss touching every output.
    def loss(y, h, c=None):
        v = (y * torch.linspace(-1, 1, y.shape[-1], dtype=dtype)).sum() + (h**2).sum()
        return v + (c.sum() if c is not None else 0)

    leaves = [x, h0] + ([c0] if family == "lstm" else []) + list(m.parameters())
    l_t = loss(y, hn_t, hn[1] if family == "lstm" else None)
    g_t = torch.autograd.grad(l_t, leaves, retain_graph=True)
    l_f = loss(
        y_f,
        torch.stack([fused[0][1], fused[1][1]]),
        torch.stack([fused[0][2], fused[1][2]]) if family == "lstm" else None,
    )
    g_f = torch.autograd.grad(l_f, leaves)
    names = (
        ["input", "h0"]
        + (["c0"] if family == "lstm" else [])
        + [n for n, _ in m.named_parameters()]
    )
    for n, a, b in zip(names, g_f, g_t):
        _compare(a, b, dtype, f"grad {n}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,I,H", [(1, 1, 1), (5, 7, 33), (16, 64, 130)])
def test_cell_parity_with_torch_nn(family, dtype, B, I, H):
    if family == "lstm":
        m = torch.nn.LSTMCell(I, H)
    elif family == "gru":
        m = torch.nn.GRUCell(I, H)
    else:
        m = torch.nn.RNNCell(I, H, nonlinearity=family.split("_")[1])
    m = m.to(dtype)
    x = torch.randn(B, I, dtype=dtype, requires_grad=True)
    hx = torch.randn(B, H, dtype=dtype, requires_grad=True)
    cx = torch.randn(B, H, dtype=dtype, requires_grad=True)
    w = (m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)
    if family == "lstm":
        out_t = m(x, (hx, cx))
        out_f = fusedrnn.lstm_cell(x, hx, cx, *w)
        leaves = [x, hx, cx, *w]
    else:
        out_t = (m(x, hx),)
        if family == "gru":
            out_f = (fusedrnn.gru_cell(x, hx, *w),)
        else:
            out_f = (fusedrnn.rnn_cell(x, hx, *w, nonlinearity=family.split("_")[1]),)
        leaves = [x, hx, *w]
    for a, b in zip(out_f, out_t):
        _compare(a, b, dtype, "cell output")
    gs = [torch.randn_like(o) for o in out_t]
    g_t = torch.autograd.grad(out_t, leaves, gs)
    g_f = torch.autograd.grad(out_f, leaves, gs)
    for i, (a, b) in enumerate(zip(g_f, g_t)):
        _compare(a, b, dtype, f"cell grad {i}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("proj", [0, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_unsorted_lengths_match_reference(family, proj, reverse):
    """Packed sequences with equal and distinct lengths against the readable reference."""
    if proj and family != "lstm":
        pytest.skip("projection is LSTM-only")
    case = make_layer_case(family, 4, 6, 3, 5, proj=proj, packed=True, h0=True, reverse=reverse)
    case.batch_sizes = torch.tensor([4, 4, 3, 1, 1, 1])
    case.input = torch.randn(14, 3, dtype=torch.float64, requires_grad=True)
    out_f, out_r = case.run(), case.run_ref()
    for a, b in zip(out_f, out_r):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    leaves = case.differentiable()
    gs = [torch.randn_like(o) for o in out_r]
    for a, b in zip(torch.autograd.grad(out_f, leaves, gs), torch.autograd.grad(out_r, leaves, gs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
