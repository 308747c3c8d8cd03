"""The NumPy LayerNorm references (fusedrnn.reference.LayerNormLSTM/GRU, forward and hand-written
backward) against the fused modules fusedrnn.LayerNormLSTM/GRU in float64: outputs, final
states and every gradient (input, initial states, each weight and LayerNorm gain)."""

import numpy as np
import pytest
import torch

import fusedrnn
from fusedrnn import reference as R

MODULES = {"lstm": fusedrnn.LayerNormLSTM, "gru": fusedrnn.LayerNormGRU}
CELLS = {"lstm": fusedrnn.LayerNormLSTMCell, "gru": fusedrnn.LayerNormGRUCell}


def randomise(module, seed):
    """Gains and biases away from their initial 1 and 0, so that a gradient through them that
    the reference got wrong (or ignored) shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("layernorm_"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
                if "_c_bias" in name:
                    p.sub_(1.0)
    return module


def run_both(kind, T, B, I, H, bias=True, seed=0, layer=0, suffix="", **kw):
    """Forward and backward through the fused module and the NumPy reference of one layer
    (layer 0 of the module); returns (fused results dict, reference forward, reference grads)."""
    torch.manual_seed(seed)
    m = randomise(MODULES[kind](I, H, bias=bias, **kw).double(), seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)) * 0.5, rng.standard_normal((B, H)) * 0.5
    g_out, g_hn, g_cn = (rng.standard_normal(s) for s in ((T, B, H), (B, H), (B, H)))

    def tt(a):
        return torch.tensor(a, dtype=torch.float64, requires_grad=True)

    xt, h0t, c0t = tt(x), tt(h0), tt(c0)
    hx = (h0t[None], c0t[None]) if kind == "lstm" else h0t[None]
    out, state = m(xt, hx)
    hn, cn = (state[0][0], state[1][0]) if kind == "lstm" else (state[0], None)
    loss = (out * torch.tensor(g_out)).sum() + (hn * torch.tensor(g_hn)).sum()
    if cn is not None:
        loss = loss + (cn * torch.tensor(g_cn)).sum()
    loss.backward()

    ref = R.from_torch(m)
    assert isinstance(ref, R.LayerNormLSTM if kind == "lstm" else R.LayerNormGRU)
    res = ref.forward(x, h0, c0 if kind == "lstm" else None)
    grads = ref.backward(g_out, g_hn, g_cn if kind == "lstm" else None)
    fused = {"output": out, "h_n": hn, "c_n": cn, "input": xt.grad, "h0": h0t.grad,
             "c0": c0t.grad if kind == "lstm" else None,
             **{n[: -len("_l0")]: p.grad for n, p in m.named_parameters()}}  # fmt: skip
    return fused, res, grads, ref


def assert_close(a, t, what, rtol=1e-9, atol=1e-11):
    np.testing.assert_allclose(a, t.detach().numpy(), rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "T,B,I,H", [(7, 3, 5, 6), (1, 1, 2, 3), (4, 2, 3, 1), (3, 5, 7, 33), (5, 1, 1, 33)]
)
def test_reference_matches_fused_layernorm_float64(kind, bias, T, B, I, H):
    fused, res, grads, ref = run_both(kind, T, B, I, H, bias=bias, seed=T * 7 + H)
    assert_close(res[0], fused["output"], "output", rtol=1e-10, atol=1e-12)
    assert_close(res[1], fused["h_n"], "h_n", rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        assert_close(res[2], fused["c_n"], "c_n", rtol=1e-10, atol=1e-12)
    for name in ["input", "h0"] + (["c0"] if kind == "lstm" else []):
        assert_close(grads[name], fused[name], name)
    # every parameter of the fused layer has a reference gradient, and no more
    names = set(fused) - {"output", "h_n", "c_n", "input", "h0", "c0"}
    assert names == set(ref.parameters())
    assert names <= set(grads)
    for name in names:
        assert_close(grads[name], fused[name], name)
    if kind == "lstm":
        assert ("layernorm_c_bias" in names) == bias


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reference_loads_second_layer_and_reverse_direction(kind):
    """from_torch(module, layer, suffix) picks that layer and direction, LayerNorm gains included:
    running the references layer by layer reproduces the fused two-layer bidirectional stack."""
    torch.manual_seed(3)
    m = randomise(MODULES[kind](3, 4, num_layers=2, bidirectional=True).double(), 3)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _ = m(x)
    xs = x.numpy()
    first = np.concatenate(
        [
            R.from_torch(m, 0).forward(xs)[0],
            R.from_torch(m, 0, "_reverse").forward(xs[::-1])[0][::-1],
        ],
        axis=-1,
    )
    fwd = R.from_torch(m, 1).forward(first)[0]
    bwd = R.from_torch(m, 1, "_reverse").forward(first[::-1])[0][::-1]
    np.testing.assert_allclose(
        np.concatenate([fwd, bwd], -1), out.detach().numpy(), rtol=1e-10, atol=1e-12
    )
    rev = R.from_torch(m, 1, "_reverse")
    np.testing.assert_array_equal(
        rev.ln["layernorm_hh_weight"], m.layernorm_hh_weight_l1_reverse.detach().numpy()
    )


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reference_from_cell_steps_like_fused_cell(kind):
    torch.manual_seed(4)
    cell = randomise(CELLS[kind](3, 5).double(), 4)
    ref = R.from_torch(cell)
    assert set(ref.parameters()) == {n for n, _ in cell.named_parameters()}
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 5, 5))
    ref.reset(2, h0=h, c0=c if kind == "lstm" else None)
    got = ref.step(x)
    want = cell(x, (h, c))[0] if kind == "lstm" else cell(x, h)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_reference_layernorm_defaults_state_and_errors():
    ref = R.LayerNormLSTM(2, 3, seed=1)
    np.testing.assert_array_equal(ref.ln["layernorm_ih_weight"], np.ones(12))
    np.testing.assert_array_equal(ref.ln["layernorm_c_bias"], np.zeros(3))
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    out, _h, c = ref.forward(x)
    # the carried state is c' (not normalised); h' = o * tanh(LN(c') + b_c)
    np.testing.assert_allclose(ref.gate_trace("c")[-1], c)
    cn = ref.gate_trace("c_norm")
    v = ref.gate_trace("c").var(-1)  # gain 1, bias 0: zero mean, variance v / (v + eps)
    np.testing.assert_allclose(cn.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(cn.var(-1), v / (v + 1e-5), rtol=1e-10)
    np.testing.assert_allclose(out, ref.gate_trace("output") * np.tanh(cn))
    assert "layernorm_c_bias" not in R.LayerNormLSTM(2, 3, bias=False).parameters()
    assert set(R.LayerNormGRU(2, 3).parameters()) == {
        "weight_ih", "weight_hh", "bias_ih", "bias_hh", "layernorm_ih_weight",
        "layernorm_hh_weight"}  # fmt: skip
    with pytest.raises(TypeError, match="LayerNormLSTM"):
        R.from_torch(torch.nn.Linear(2, 3))


def test_layer_norm_backward_matches_finite_differences():
    rng = np.random.default_rng(5)
    v, w, dy = rng.standard_normal((3, 7)), rng.random(7) + 0.5, rng.standard_normal((3, 7))
    _, vhat, rstd = R.layer_norm(v, w)
    gw = np.zeros(7)
    dv = R.layer_norm_backward(dy, vhat, rstd, w, gw)
    eps = 1e-6
    num = np.zeros_like(v)
    for idx in np.ndindex(*v.shape):
        e = np.zeros_like(v)
        e[idx] = eps
        num[idx] = ((R.layer_norm(v + e, w)[0] - R.layer_norm(v - e, w)[0]) * dy).sum() / (2 * eps)
    np.testing.assert_allclose(dv, num, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, (dy * vhat).sum(0))
