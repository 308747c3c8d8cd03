"""float64 gradcheck of every op over cell family x bias x proj x reverse x packed x h0,
with odd sizes. gradcheck differentiates the whole op (forward op + registered backward op)."""

import itertools

import pytest
import torch

import fusedrnn

from op_cases import FAMILIES, make_layer_case

SIZES = [(1, 1, 1, 1), (3, 5, 4, 5), (3, 1, 1, 5), (1, 5, 4, 1)]  # (B, T, I, H)
FAMS = [(f, 0) for f in FAMILIES] + [("lstm", 3)]


@pytest.mark.parametrize("family,proj", FAMS, ids=[f"{f}-p{p}" for f, p in FAMS])
@pytest.mark.parametrize(
    "bias,reverse,packed,h0",
    list(itertools.product([True, False], repeat=4)),
    ids=lambda v: str(int(v)),
)
def test_layer_gradcheck(family, proj, bias, reverse, packed, h0):
    for B, T, I, H in SIZES:
        if proj and H <= proj:
            H = proj + 2
        case = make_layer_case(
            family, B, T, I, H, bias=bias, proj=proj, packed=packed, h0=h0, reverse=reverse
        )
        inputs = case.differentiable()

        def fn(*_):
            return case.run()

        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5), (B, T, I, H)


CELL_SIZES = [(1, 1, 1), (3, 4, 5), (2, 1, 33)]  # (B, I, H)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_gradcheck(family, bias):
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[family]
    for B, I, H in CELL_SIZES:
        d = dict(dtype=torch.float64, requires_grad=True)
        x = torch.randn(B, I, **d)
        hx = torch.randn(B, H, **d)
        cx = torch.randn(B, H, **d)
        w_ih = (torch.randn(G * H, I, dtype=torch.float64) * 0.5).requires_grad_()
        w_hh = (torch.randn(G * H, H, dtype=torch.float64) * 0.5).requires_grad_()
        b_ih = torch.randn(G * H, **d) if bias else None
        b_hh = torch.randn(G * H, **d) if bias else None
        if family == "lstm":
            fn = fusedrnn.lstm_cell
            inputs = [x, hx, cx, w_ih, w_hh] + ([b_ih, b_hh] if bias else [])

            def f(x, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
                return fn(x, hx, cx, w_ih, w_hh, b_ih, b_hh)
        elif family == "gru":
            inputs = [x, hx, w_ih, w_hh] + ([b_ih, b_hh] if bias else [])

            def f(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
                return fusedrnn.gru_cell(x, hx, w_ih, w_hh, b_ih, b_hh)
        else:
            nl = family.split("_")[1]
            inputs = [x, hx, w_ih, w_hh] + ([b_ih, b_hh] if bias else [])

            def f(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
                return fusedrnn.rnn_cell(x, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity=nl)

        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
