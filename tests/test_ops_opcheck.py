"""torch.library.opcheck on every op (schema, fake kernel, autograd registration,
faketensor/dispatch consistency) with sample inputs, packed and unpacked."""

import pytest
import torch

from op_cases import make_layer_case

ops = torch.ops.fusedrnn


def _layer_args(case):
    w = case.weights
    if case.family == "lstm":
        return (case.input, case.batch_sizes, case.h0, case.c0, w["w_ih"], w["w_hh"], w["b_ih"],
                w["b_hh"], w["w_hr"], case.reverse)  # fmt: skip
    return (case.input, case.batch_sizes, case.h0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
            case.reverse)  # fmt: skip


CASES = [
    # family, proj, packed, h0, bias, reverse
    ("rnn_tanh", 0, False, True, True, False),
    ("rnn_relu", 0, True, True, False, True),
    ("lstm", 0, False, False, True, True),
    ("lstm", 3, True, True, True, False),
    ("gru", 0, False, True, True, True),
    ("gru", 0, True, True, False, False),
]


@pytest.mark.parametrize("family,proj,packed,h0,bias,reverse", CASES)
@pytest.mark.parametrize("requires_grad", [True, False])
def test_opcheck_layer_and_backward(family, proj, packed, h0, bias, reverse, requires_grad):
    case = make_layer_case(family, 3, 4, 2, 5, bias=bias, proj=proj, packed=packed, h0=h0,
                           reverse=reverse, requires_grad=requires_grad)  # fmt: skip
    fwd = getattr(ops, f"{family}_layer")
    args = _layer_args(case)
    torch.library.opcheck(fwd, args)
    if not requires_grad:
        return
    outs = fwd(*args)
    grads = [torch.randn_like(o) for o in outs[: 3 if family == "lstm" else 2]]
    bwd = getattr(ops, f"{family}_layer_backward")
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    outs = [o.detach() for o in outs]
    if family == "lstm":
        bargs = (*grads, *plain, outs[0], outs[3])
    elif family == "gru":
        bargs = (*grads, *plain, outs[0], outs[2])
    else:
        bargs = (*grads, *plain, outs[0])
    torch.library.opcheck(bwd, bargs)
    # input_grad=False: grad_input is skipped (empty), every other gradient is unchanged.
    torch.library.opcheck(bwd, (*bargs, False))
    full, skipped = bwd(*bargs), bwd(*bargs, False)
    assert full[0].shape == case.input.shape and skipped[0].numel() == 0
    for a, b in zip(full[1:], skipped[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("B", [1, 3])
def test_opcheck_cell_and_backward(family, bias, B):
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[family]
    I, H = 2, 5
    d = dict(dtype=torch.float64, requires_grad=True)
    x, hx, cx = torch.randn(B, I, **d), torch.randn(B, H, **d), torch.randn(B, H, **d)
    w_ih, w_hh = torch.randn(G * H, I, **d), torch.randn(G * H, H, **d)
    b_ih = torch.randn(G * H, **d) if bias else None
    b_hh = torch.randn(G * H, **d) if bias else None
    fwd = getattr(ops, f"{family}_cell")
    bwd = getattr(ops, f"{family}_cell_backward")
    if family == "lstm":
        args = (x, hx, cx, w_ih, w_hh, b_ih, b_hh)
    else:
        args = (x, hx, w_ih, w_hh, b_ih, b_hh)
    torch.library.opcheck(fwd, args)
    out = fwd(*args)
    plain = tuple(a.detach() if a is not None else None for a in args)
    g = torch.randn(B, H, dtype=torch.float64)
    if family == "lstm":
        bargs = (g, torch.randn_like(g), *plain, out[2].detach())
    elif family == "gru":
        bargs = (g, *plain, out[1].detach())
    else:
        bargs = (g, *plain, out.detach())
    torch.library.opcheck(bwd, bargs)
    # input_grad / hx_grad false: that gradient is skipped (an empty [0]), the rest unchanged.
    full = bwd(*bargs)
    for flags in ((False, True), (True, False), (False, False)):
        torch.library.opcheck(bwd, (*bargs, *flags))
        part = bwd(*bargs, *flags)
        for k, (a, b) in enumerate(zip(full, part)):
            if k < 2 and not flags[k]:  # grad_input, grad_hx
                assert b.shape == (0,)
            else:
                torch.testing.assert_close(a, b, rtol=0, atol=0)
