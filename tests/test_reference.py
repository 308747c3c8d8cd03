"""The NumPy references (fusedrnn.reference) against the fused ops (float64, forward and
every gradient) and against torch.nn."""

import numpy as np
import pytest
import torch

import fusedrnn
from fusedrnn import reference as R

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def make_ref(cell, I, H, bias=True, seed=0):
    if cell.startswith("rnn"):
        return R.ElmanRNN(I, H, nonlinearity=cell[4:], bias=bias, seed=seed)
    return {"lstm": R.LSTM, "gru": R.GRU}[cell](I, H, bias=bias, seed=seed)


def fused_layer(cell, x, w, h0, c0):
    """Run the fused layer op; returns (output, h_n, c_n or None)."""
    if cell.startswith("rnn"):
        out, hn = fusedrnn.rnn_layer(x, *w, nonlinearity=cell[4:], h0=h0)
        return out, hn, None
    if cell == "lstm":
        return fusedrnn.lstm_layer(x, *w, h0=h0, c0=c0)
    out, hn = fusedrnn.gru_layer(x, *w, h0=h0)
    return out, hn, None


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T,B,I,H", [(7, 3, 5, 6), (1, 1, 2, 3), (4, 2, 3, 1)])
def test_reference_matches_fused_layer_float64(cell, bias, T, B, I, H):
    rng = np.random.default_rng(1)
    ref = make_ref(cell, I, H, bias=bias, seed=2)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5
    g_out = rng.standard_normal((T, B, H))
    g_hn = rng.standard_normal((B, H))
    g_cn = rng.standard_normal((B, H))

    # fused, with autograd through the registered backward ops
    def tt(a):
        return torch.tensor(a, dtype=torch.float64, requires_grad=True)

    w = [tt(p) for p in ref.parameters().values()]
    wargs = w if bias else w + [None, None]
    xt, h0t, c0t = tt(x), tt(h0), tt(c0)
    out, hn, cn = fused_layer(cell, xt, wargs, h0t, c0t if cell == "lstm" else None)
    loss = (out * torch.tensor(g_out)).sum() + (hn * torch.tensor(g_hn)).sum()
    if cn is not None:
        loss = loss + (cn * torch.tensor(g_cn)).sum()
    loss.backward()

    res = ref.forward(x, h0, c0 if cell == "lstm" else None)
    np.testing.assert_allclose(res[0], out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res[1], hn.detach().numpy(), rtol=1e-10, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(res[2], cn.detach().numpy(), rtol=1e-10, atol=1e-12)

    grads = ref.backward(g_out, g_hn, g_cn if cell == "lstm" else None)

    def check(a, t):
        return np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-9, atol=1e-11)

    check(grads["input"], xt)
    check(grads["h0"], h0t)
    if cell == "lstm":
        check(grads["c0"], c0t)
    for name, t in zip(ref.parameters(), w):
        check(grads[name], t)


@pytest.mark.parametrize("cell", CELLS)
def test_reference_hidden_gradients_match_fused_cells(cell):
    """``backward()['hidden'][k]`` is the total dL/dh_k: compare with autograd through the
    fused cell op run step by step with retained grads on every h_k."""
    T, B, I, H = 6, 2, 3, 4
    rng = np.random.default_rng(3)
    ref = make_ref(cell, I, H, seed=4)
    x = rng.standard_normal((T, B, I))
    w = [torch.tensor(p) for p in ref.parameters().values()]
    h = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(B, H, dtype=torch.float64)
    hs = [h]
    for t in range(T):
        xt = torch.tensor(x[t])
        if cell.startswith("rnn"):
            h = fusedrnn.rnn_cell(xt, h, *w, nonlinearity=cell[4:])
        elif cell == "lstm":
            h, c = fusedrnn.lstm_cell(xt, h, c, *w)
        else:
            h = fusedrnn.gru_cell(xt, h, *w)
        h.retain_grad()
        hs.append(h)
    h.sum().backward()
    ref.forward(x)
    g = ref.backward(grad_hn=np.ones((B, H)))
    for k in range(T + 1):
        np.testing.assert_allclose(g["hidden"][k], hs[k].grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "RNN_relu", "LSTM", "GRU"])
def test_reference_matches_torch_nn(kind):
    torch.manual_seed(0)
    I, H, T, B = 4, 5, 6, 3
    if kind.startswith("RNN"):
        m = torch.nn.RNN(I, H, nonlinearity="relu" if kind.endswith("relu") else "tanh")
    else:
        m = getattr(torch.nn, kind)(I, H)
    m = m.double()
    ref = R.from_torch(m)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    out, *_ = m(x)
    out.sum().backward()
    res = ref.forward(x.detach().numpy())
    np.testing.assert_allclose(res[0], out.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = ref.backward(np.ones((T, B, H)))
    np.testing.assert_allclose(g["input"], x.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g["weight_hh"], m.weight_hh_l0.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_reference_from_torch_cell_and_second_layer_float32():
    torch.manual_seed(1)
    cell = torch.nn.GRUCell(3, 4)
    ref = R.from_torch(cell)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    ref.reset(2, h0=h)
    np.testing.assert_allclose(ref.step(x), cell(x, h).detach().numpy(), rtol=1e-5, atol=1e-6)

    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    out, _ = lstm(x)
    first = np.concatenate(
        [
            R.from_torch(lstm, 0).forward(x.numpy())[0],
            R.from_torch(lstm, 0, "_reverse").forward(x.numpy()[::-1])[0][::-1],
        ],
        axis=-1,
    )
    second = R.from_torch(lstm, 1).forward(first)[0]
    np.testing.assert_allclose(second, out[..., :4].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_reference_state_gates_and_reset():
    ref = R.LSTM(2, 3, seed=5)
    x = np.random.default_rng(0).standard_normal((4, 1, 2))
    out, _h, _c = ref.forward(x)
    for name in ref.gate_names:
        v = ref.gate_trace(name)
        assert v.shape == (4, 1, 3)
    f, i, g = ref.gate_trace("forget"), ref.gate_trace("input"), ref.gate_trace("cell")
    assert np.all((f > 0) & (f < 1)) and np.all(np.abs(g) < 1)
    np.testing.assert_allclose(ref.gate_trace("c")[1], f[1] * ref.gate_trace("c")[0] + i[1] * g[1])
    # step-by-step equals forward; unbatched steps work; reset clears state and history
    ref.reset()
    steps = [ref.step(xt[0]) for xt in x]
    np.testing.assert_allclose(np.stack(steps), out[:, 0])
    ref.reset()
    assert not ref.history and np.all(ref.h == 0) and np.all(ref.c == 0)
    with pytest.raises(ValueError):
        ref.load(np.zeros((3, 2)), np.zeros((12, 3)))
    with pytest.raises(ValueError):
        R.ElmanRNN(2, 3, nonlinearity="sigmoid")


@pytest.mark.parametrize(
    "make, kw, says",
    [
        (lambda: torch.nn.LSTM(3, 4), {"layer": 3}, "layer"),
        (lambda: torch.nn.LSTM(3, 4), {"suffix": "_reverse"}, "suffix"),
        (lambda: torch.nn.GRUCell(3, 4), {"suffix": "_reverse"}, "suffix"),
    ],
)
def test_from_torch_names_a_layer_or_direction_the_module_lacks(make, kw, says):
    """These were bare KeyErrors ('weight_ih_l3', 'weight_ih_l0_reverse')."""
    from fusedrnn import reference

    with pytest.raises(ValueError, match=says):
        reference.from_torch(make(), **kw)
