"""Every CPU kernel table (DEFAULT, AVX2, AVX-512: picked at run time, ATEN_CPU_CAPABILITY
forces one) gives torch.nn's results (the fused small-H steps at every partial row group among
them; the LayerNorm families: the reference's; the thin products, the outer one included:
float64 matmuls; the one-row GEMMs of a B = 1 cell step and its one-row step), and its dropout
sampler torch.nn's masks. Each runs in a fresh process, since the table is chosen once per
process."""

import os

import pytest

import fusedrnn

from op_cases import run_script

SCRIPT = r"""
import json, torch, fusedrnn
from op_cases import rel_err
torch.manual_seed(0)
errs = {}


# worst rel_err of f's output and its gradients (wrt, then parameters) against m's
def nn_err(m, f, args, wrt, pick=lambda y: y[0]):
    y_t, y_f = pick(m(*args)), pick(f(*args))
    g = torch.randn_like(y_t)
    gt = torch.autograd.grad(y_t, [*wrt, *m.parameters()], g)
    gf = torch.autograd.grad(y_f, [*wrt, *f.parameters()], g)
    return max([rel_err(y_f, y_t)] + [rel_err(a, b) for a, b in zip(gf, gt)])


for dtype in (torch.float32, torch.float64):
    for name, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        m = cls(3, 37, num_layers=2, bidirectional=True).to(dtype)  # 37: SIMD body + tail
        f = fusedrnn.from_torch(m)
        x = torch.randn(9, 5, 3, dtype=dtype, requires_grad=True)
        errs[f"{name}-{dtype}"] = nn_err(m, f, (x,), (x,))
    # LayerNorm families (ln_pointwise.h) against the readable reference
    for name, cls in (("lnlstm", fusedrnn.LayerNormLSTM), ("lngru", fusedrnn.LayerNormGRU)):
        f = cls(3, 37, num_layers=2, bidirectional=True).to(dtype)
        with torch.no_grad():
            for n, p in f.named_parameters():
                if n.startswith("layernorm_"):
                    p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(9, 5, 3, dtype=dtype, requires_grad=True)
        fam = "ln_lstm" if name == "lnlstm" else "ln_gru"
        # the reference in float64: LayerNorm scales float32 rounding by 1/std
        x64 = x.detach().double().requires_grad_()
        w64 = [w.detach().double().requires_grad_() for w in f._flat_weights]
        y_t = fusedrnn.layernorm.reference_stack(fam, x64, None, None, None, w64,
            num_layers=2, bidirectional=True, has_biases=True, dropout=0.0, train=False)[0]
        y_f = f(x)[0]
        g = torch.randn_like(y_t)
        gt = torch.autograd.grad(y_t, [x64, *w64], g)
        gf = [t.double() for t in torch.autograd.grad(y_f, [x, *f._flat_weights], g.to(dtype))]
        y_f = y_f.double()
        errs[f"{name}-{dtype}"] = max(
            [rel_err(y_f, y_t)] + [rel_err(a, b) for a, b in zip(gf, gt)])
# the fused small-H steps (lstm_fused.h, gru_fused.h, rnn_fused.h: float32, H a multiple of
# the vector width; the DEFAULT table has none and runs BLAS) and the backward's narrow dh
# product: B = 1..13 takes every partial row group of both SIMD tables
for name, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
    m = cls(3, 64, num_layers=2)
    f = fusedrnn.from_torch(m)
    worst = 0.0
    for B in range(1, 14):
        x = torch.randn(4, B, 3, requires_grad=True)
        worst = max(worst, nn_err(m, f, (x,), (x,)))
    errs[f"fused-{name}-torch.float32"] = worst
# products with a thin side (thin_products.h): both passes, column tails, several row blocks
for dtype in (torch.float32, torch.float64):
    x = torch.randn(600, 37, dtype=dtype)
    for j in (1, 3):
        b = torch.randn(600, j, dtype=dtype)
        r = torch.randn(37, j + 4, dtype=dtype)
        t = torch.ops.fusedrnn_testing
        errs[f"thin-tall{j}-{dtype}"] = rel_err(t.buffer_mm(x.t(), b), x.double().t() @ b.double())
        errs[f"thin-row{j}-{dtype}"] = rel_err(t.buffer_mm(x, r), x.double() @ r.double())
    w = torch.randn(1000, 64, dtype=dtype)[:, 7:44]  # the wide pass: 37 rows of out, J = 32
    hw = torch.randn(1000, 32, dtype=dtype)
    errs[f"thin-wide-{dtype}"] = rel_err(t.buffer_mm(w.t(), hw), w.double().t() @ hw.double())
    errs[f"thin-sums-{dtype}"] = rel_err(torch.ops.fusedrnn_testing.column_sums(x),
                                         x.double().sum(0))
# one-row GEMMs (cpu_backend.h thin_row): cell steps at B = 1, forward and backward
for dtype in (torch.float32, torch.float64):
    for name, cls in (("rnn", torch.nn.RNNCell), ("lstm", torch.nn.LSTMCell),
                      ("gru", torch.nn.GRUCell)):
        m = cls(5, 37).to(dtype)
        f = fusedrnn.from_torch(m)
        x = torch.randn(1, 5, dtype=dtype, requires_grad=True)
        h = torch.randn(1, 37, dtype=dtype, requires_grad=True)
        hx = (h, torch.randn(1, 37, dtype=dtype)) if name == "lstm" else h
        pick = (lambda y: y[0]) if name == "lstm" else (lambda y: y)
        errs[f"row1-{name}-{dtype}"] = nn_err(m, f, (x, hx), (x, h), pick)
        with torch.no_grad():  # no workspace: the one-row step (one_row_step.h)
            outs = [mod(x, hx) for mod in (m, f)]
        outs = [list(o) if name == "lstm" else [o] for o in outs]
        errs[f"onerow-{name}-{dtype}"] = max(rel_err(a, b) for a, b in zip(outs[1], outs[0]))
    a = torch.randn(1, 40, dtype=dtype)[:, 3:].t()  # the outer pass: a column times a row
    b = torch.randn(1, 37, dtype=dtype)
    errs[f"thin-outer-{dtype}"] = rel_err(t.buffer_mm(a, b), a.double() @ b.double())
# dropout masks (mask_sampler.h): torch.nn's, from a generator left where torch.nn leaves it;
# 2 x 64 rows of 37 x 2 features: thousands of draws, several engine refills
masks = []
for dtype in (torch.float32, torch.float64):
    m = torch.nn.GRU(3, 37, num_layers=3, dropout=0.3, bidirectional=True).to(dtype)
    f = fusedrnn.from_torch(m)
    x = torch.randn(2, 64, 3, dtype=dtype)
    torch.manual_seed(11)
    y_t, r_t = m(x)[0], torch.rand(4)
    torch.manual_seed(11)
    y_f, r_f = f(x)[0], torch.rand(4)
    masks.append(rel_err(y_f, y_t) < (1e-5 if dtype == torch.float32 else 1e-11)
                 and torch.equal(r_t, r_f))
info = fusedrnn.build_info()
print(json.dumps({"isa": info["cpu_kernels"], "errs": errs, "masks": masks,
                  "sampler": info["cpu_dropout_sampler"]}))
"""


def _available():
    caps = ["default"]
    cap = fusedrnn.build_info()["cpu_capability"]
    if cap in ("AVX2", "AVX512"):
        caps.append("avx2")
    if cap == "AVX512":
        caps.append("avx512")
    return caps


@pytest.mark.parametrize("cap", ["default", "avx2", "avx512"])
def test_kernel_table_matches_torch(cap):
    if cap not in _available():
        pytest.skip(f"this CPU lacks {cap}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, OMP_NUM_THREADS="1")
    res = run_script(SCRIPT, env, timeout=300)
    assert res["isa"] == cap.upper()
    assert res["sampler"] == "fused" and all(res["masks"]), res
    for key, err in res["errs"].items():
        tol = (5e-5 if key.startswith("ln") else 1e-5) if "float32" in key else 1e-11
        assert err < tol, (cap, key, err)
