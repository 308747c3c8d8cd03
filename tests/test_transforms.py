"""Function transforms agree with torch.nn (float64): forward-mode AD (torch.func.jvp, jacfwd,
hessian, torch.autograd.forward_ad), torch.func.grad / vmap / functional_call, model ensembles
with stack_module_state, and per-sample gradients. What is not supported raises."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

import fusedrnn

TOL = {"rtol": 1e-9, "atol": 1e-11}
KINDS = {
    "rnn": lambda: nn.RNN(3, 4, 2, dtype=torch.float64),
    "rnn_relu_bi": lambda: nn.RNN(
        3, 4, 1, nonlinearity="relu", bidirectional=True, dtype=torch.float64
    ),
    "lstm": lambda: nn.LSTM(3, 4, 2, dtype=torch.float64),
    "lstm_proj_bi": lambda: nn.LSTM(3, 4, 2, proj_size=2, bidirectional=True, dtype=torch.float64),
    "gru": lambda: nn.GRU(3, 4, 2, batch_first=True, dtype=torch.float64),
}
CELLS = {
    "rnn_cell": lambda: nn.RNNCell(3, 4, dtype=torch.float64),
    "lstm_cell": lambda: nn.LSTMCell(3, 4, dtype=torch.float64),
    "gru_cell": lambda: nn.GRUCell(3, 4, dtype=torch.float64),
}


def _pair(make):
    torch.manual_seed(0)
    ref = make()
    return ref, fusedrnn.from_torch(ref)


def _out(mod, x):
    y = mod(x)
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize("kind", list(KINDS) + list(CELLS))
def test_jvp_and_forward_ad_match_torch(kind):
    ref, fused = _pair({**KINDS, **CELLS}[kind])
    x = torch.randn(5, 2, 3, dtype=torch.float64) if kind in KINDS else torch.randn(2, 3).double()
    v = torch.randn_like(x)
    want = torch.func.jvp(lambda t: _out(ref, t), (x,), (v,))
    got = torch.func.jvp(lambda t: _out(fused, t), (x,), (v,))
    assert want[1].abs().max() > 0
    torch.testing.assert_close(got, want, **TOL)
    with fwAD.dual_level():
        t_ref = fwAD.unpack_dual(_out(ref, fwAD.make_dual(x, v))).tangent
        t_got = fwAD.unpack_dual(_out(fused, fwAD.make_dual(x, v))).tangent
    torch.testing.assert_close(t_got, t_ref, **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_jacfwd_equals_jacrev_equals_torch(kind):
    ref, fused = _pair(KINDS[kind])
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    want = torch.func.jacrev(lambda t: _out(ref, t))(x)
    torch.testing.assert_close(torch.func.jacfwd(lambda t: _out(fused, t))(x), want, **TOL)
    torch.testing.assert_close(torch.func.jacrev(lambda t: _out(fused, t))(x), want, **TOL)


@pytest.mark.parametrize("kind", ["lstm", "rnn", "lstm_cell"])
def test_hessian_matches_pure_torch_recomputation(kind):
    """hessian = jacfwd(jacrev): forward-mode AD through the backward ops."""
    ref, fused = _pair({**KINDS, **CELLS}[kind])
    x = torch.randn(2, 1, 3, dtype=torch.float64) if kind in KINDS else torch.randn(1, 3).double()

    def loss(mod):
        return lambda t: _out(mod, t).pow(2).sum()

    got = torch.func.hessian(loss(fused))(x)
    # torch.nn's RNN kernels have no forward-mode derivative of their backward: compare with
    # reverse-over-reverse on torch.nn, row by row.
    flat = x.reshape(-1)
    rows = []
    for i in range(flat.numel()):
        xi = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(ref)(xi), xi, create_graph=True)
        (h,) = torch.autograd.grad(g.reshape(-1)[i], xi)
        rows.append(h.reshape(-1))
    want = torch.stack(rows).reshape(*x.shape, *x.shape)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", list(KINDS) + list(CELLS))
def test_grad_of_grad_matches_torch(kind):
    """torch.func.grad of a torch.func.grad (and jacrev of grad) runs the double backward
    inside a functorch transform, where requires_grad_() is refused: as torch.nn's."""
    ref, fused = _pair({**KINDS, **CELLS}[kind])
    x = torch.randn(5, 2, 3, dtype=torch.float64) if kind in KINDS else torch.randn(2, 3).double()

    def gg(mod):
        inner = torch.func.grad(lambda s: _out(mod, s).pow(2).sum())
        return torch.func.grad(lambda t: inner(t).sin().sum())(x)

    want = gg(ref)
    assert want.abs().max() > 0
    torch.testing.assert_close(gg(fused), want, **TOL)
    jg = [
        torch.func.jacrev(torch.func.grad(lambda s, m=m: _out(m, s).pow(2).sum()))(x)
        for m in (ref, fused)
    ]
    torch.testing.assert_close(jg[1], jg[0], **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu_bi", "gru_cell"])
def test_vmap_over_inputs_equals_a_loop(kind):
    ref, fused = _pair({**KINDS, **CELLS}[kind])
    xs = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    if kind.endswith("cell"):
        xs = xs[:, 0]
    got = torch.func.vmap(lambda t: _out(fused, t))(xs)
    want = torch.stack([_out(ref, t) for t in xs])
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", ["lstm", "lstm_proj_bi", "gru"])
def test_grad_of_functional_call_matches_torch(kind):
    ref, fused = _pair(KINDS[kind])
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in fused.named_parameters()}

    def loss(p):
        return torch.func.functional_call(fused, p, (x,))[0].pow(2).sum()

    got = torch.func.grad(loss)(params)
    ref_loss = ref(x)[0].pow(2).sum()
    want = dict(zip(params, torch.autograd.grad(ref_loss, list(ref.parameters()))))
    for k in params:
        torch.testing.assert_close(got[k], want[k], **TOL)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN, fusedrnn.LayerNormLSTM])
def test_vmap_dropout_follows_randomness(cls):
    """Dropout between layers under vmap: "error" (the default) refuses, as torch's random
    ops do; "same" gives every entry one draw's masks (those of a call outside vmap under the
    same seed); "different" draws per entry."""
    torch.manual_seed(0)
    m = cls(3, 4, 2, dropout=0.5, dtype=torch.float64)
    f = m if isinstance(m, fusedrnn.LayerNormLSTM) else fusedrnn.from_torch(m)
    f.train()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    xs = x.expand(3, 5, 2, 3)
    with pytest.raises(RuntimeError, match="randomness"):
        torch.func.vmap(torch.nn.functional.dropout)(xs)  # torch's own class and words
    with pytest.raises(RuntimeError, match="randomness error mode"):
        torch.func.vmap(f)(xs)
    torch.manual_seed(7)
    same = torch.func.vmap(f, randomness="same")(xs)[0]
    torch.manual_seed(7)
    once = f(x)[0]
    for y in same:
        torch.testing.assert_close(y, once, rtol=0, atol=0)
    different = torch.func.vmap(f, randomness="different")(xs)[0]
    assert not torch.equal(different[0], different[1])
    f.eval()  # no masks: the default randomness is fine
    torch.testing.assert_close(torch.func.vmap(f)(xs)[0][2], f(x)[0], **TOL)


def test_model_ensemble_with_stack_module_state():
    torch.manual_seed(0)
    refs = [nn.LSTM(3, 4, 2, dtype=torch.float64) for _ in range(3)]
    fused = [fusedrnn.from_torch(m) for m in refs]
    params, buffers = torch.func.stack_module_state(fused)
    base = fusedrnn.from_torch(refs[0]).to("meta")
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def one(p, b):
        return torch.func.functional_call(base, (p, b), (x,))[0]

    got = torch.func.vmap(one)(params, buffers)
    want = torch.stack([m(x)[0] for m in refs])
    torch.testing.assert_close(got, want, **TOL)


def test_per_sample_gradients_vmap_of_grad():
    ref, fused = _pair(KINDS["gru"])  # batch_first
    xs = torch.randn(4, 5, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in fused.named_parameters()}

    def loss(p, x):
        return torch.func.functional_call(fused, p, (x.unsqueeze(0),))[0].sum()

    got = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(xs.shape[0]):
        want = torch.autograd.grad(ref(xs[i : i + 1])[0].sum(), list(ref.parameters()))
        for k, w in zip(params, want):
            torch.testing.assert_close(got[k][i], w, **TOL)


def test_ops_forward_ad_and_torch_func_on_the_functions():
    """The fused functions support transforms; raw torch.ops calls inside a torch.func
    transform raise a clear error instead of returning a wrong value."""
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    w_ih, w_hh = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 4, dtype=torch.float64)
    v = torch.randn_like(x)
    got = torch.func.jvp(lambda t: fusedrnn.lstm_layer(t, w_ih, w_hh)[0], (x,), (v,))
    from fusedrnn import reference_torch as ref

    want = torch.func.jvp(lambda t: ref.lstm_layer(t, w_ih, w_hh)[0], (x,), (v,))
    torch.testing.assert_close(got, want, **TOL)
    with fwAD.dual_level():
        out = torch.ops.fusedrnn.lstm_layer(
            fwAD.make_dual(x, v), None, None, None, w_ih, w_hh, None, None, None, False
        )
        torch.testing.assert_close(fwAD.unpack_dual(out[0]).tangent, want[1], **TOL)
    with pytest.raises(RuntimeError, match="torch.func"):
        torch.func.jvp(
            lambda t: torch.ops.fusedrnn.lstm_layer(
                t, None, None, None, w_ih, w_hh, None, None, None, False
            )[0],
            (x,),
            (v,),
        )


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_with_zero_state_saves_no_weight_hh(kind):
    """hx=None: weight_hh is not needed for backward, so editing it in place before
    backward() is fine (as with torch.nn) and the gradients are the unedited ones."""
    ref, fused = _pair(CELLS[kind])
    x = torch.randn(2, 3, dtype=torch.float64)
    grads = []
    for cell in (ref, fused):
        out = _out(cell, x)
        with torch.no_grad():
            cell.weight_hh.mul_(0.5)
        out.sum().backward()
        grads.append([p.grad for p in cell.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)
    # input without grad: weight_ih is not saved either
    ref2, fused2 = _pair(CELLS[kind])
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    hx = (h, h) if kind == "lstm_cell" else h
    for cell in (ref2, fused2):
        out = _out_hx(cell, x, hx)
        with torch.no_grad():
            cell.weight_ih.mul_(0.5)
        out.sum().backward()


def _out_hx(cell, x, hx):
    y = cell(x, hx)
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize(
    "make,x,hx",
    [
        (lambda: fusedrnn.LSTM(3, 4, 2), torch.randn(5, 2, 3), torch.randn(2, 2, 2, 4)),
        (lambda: fusedrnn.LSTMCell(3, 4), torch.randn(2, 3), torch.randn(2, 2, 4)),
        (lambda: fusedrnn.GRU(3, 4), torch.randn(5, 2, 3), (torch.randn(1, 2, 4),)),
        (lambda: fusedrnn.GRUCell(3, 4), torch.randn(2, 3), (torch.randn(2, 4),)),
        (lambda: fusedrnn.LSTM(3, 4), torch.randn(5, 2, 3), (torch.randn(1, 2, 4), None)),
    ],
)
def test_hx_type_errors_like_torch(make, x, hx):
    fused = make()
    with pytest.raises((TypeError, AttributeError)):
        fused.to_torch()(x, hx)
    with pytest.raises(TypeError, match="hx"):
        fused(x, hx)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_double_backward_with_input_and_state_that_need_no_grad(kind):
    """The weights that first-order backward does not read are not saved, but gradients of
    gradients still see their values (a gradient penalty on the weights)."""
    ref, fused = _pair(CELLS[kind])
    x = torch.randn(2, 3, dtype=torch.float64)
    h = torch.randn(2, 4, dtype=torch.float64)
    hx = (h, 0.5 * h) if kind == "lstm_cell" else h
    results = []
    for cell in (ref, fused):
        out = _out_hx(cell, x, hx)
        (g,) = torch.autograd.grad(out.pow(2).sum(), cell.weight_hh, create_graph=True)
        results.append(torch.autograd.grad(g.pow(2).sum(), [cell.weight_ih, cell.weight_hh]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)
