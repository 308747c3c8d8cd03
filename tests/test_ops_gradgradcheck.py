"""Second derivatives: gradgradcheck in float64 of every layer and cell op (the backward ops
have autograd too, through the readable reference). A sampled grid: each flag is covered."""

import pytest
import torch

import fusedrnn

from op_cases import FAMILIES, make_layer_case

FAMS = [(f, 0) for f in FAMILIES] + [("lstm", 2)]
FLAGS = [  # bias, reverse, packed, h0
    (True, False, False, True),
    (False, True, True, False),
    (True, True, True, True),
]


@pytest.mark.parametrize("family,proj", FAMS, ids=[f"{f}-p{p}" for f, p in FAMS])
@pytest.mark.parametrize("bias,reverse,packed,h0", FLAGS, ids=["plain", "rev-packed", "all"])
def test_layer_gradgradcheck(family, proj, bias, reverse, packed, h0):
    case = make_layer_case(
        family, 2, 3, 2, 3, bias=bias, proj=proj, packed=packed, h0=h0, reverse=reverse
    )
    inputs = case.differentiable()
    assert torch.autograd.gradgradcheck(lambda *_: case.run(), inputs, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_cell_gradgradcheck(family):
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[family]
    B, I, H = 2, 3, 3
    d = {"dtype": torch.float64, "requires_grad": True}
    x, hx, cx = torch.randn(B, I, **d), torch.randn(B, H, **d), torch.randn(B, H, **d)
    w_ih, w_hh = torch.randn(G * H, I, **d), torch.randn(G * H, H, **d)
    b_ih, b_hh = torch.randn(G * H, **d), torch.randn(G * H, **d)
    if family == "lstm":
        fn, inputs = fusedrnn.lstm_cell, (x, hx, cx, w_ih, w_hh, b_ih, b_hh)
    elif family == "gru":
        fn, inputs = fusedrnn.gru_cell, (x, hx, w_ih, w_hh, b_ih, b_hh)
    else:
        nl = family.split("_")[1]

        def fn(*a):
            return fusedrnn.rnn_cell(*a, nonlinearity=nl)

        inputs = (x, hx, w_ih, w_hh, b_ih, b_hh)
    assert torch.autograd.gradgradcheck(fn, inputs, atol=1e-6, rtol=1e-4)


def test_double_backward_matches_reference_hvp():
    """A gradient penalty's gradient equals the one computed through the reference."""
    import fusedrnn.reference_torch as ref

    case = make_layer_case("lstm", 3, 4, 2, 4, proj=2, h0=True)
    leaves = case.differentiable()

    def penalty(outs):
        g = torch.autograd.grad(sum(o.square().sum() for o in outs), leaves, create_graph=True)
        return sum(x.square().sum() for x in g)

    a = torch.autograd.grad(penalty(case.run()), leaves)
    b = torch.autograd.grad(penalty(case.run(ref)), leaves)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-10)
