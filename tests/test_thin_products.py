"""Products with a thin side on fusedrnn's own CPU passes (cpp/cpu/thin_products.h), as the ops
use them: buffer_mm (X^T B with up to 4 columns or, wide, whole vectors of up to 64; X R with
up to 8) and the bias gradients' column sums, reached through torch.ops.fusedrnn_testing. Checked against float64 matmuls at
odd sizes and strides, against MKL (tuning thin=False), and for the same bits at 1 and 2
threads."""

from __future__ import annotations

import pytest
import torch

import fusedrnn
from fusedrnn import tuning

from op_cases import rel_err

T = torch.ops.fusedrnn_testing
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-6, torch.float64: 1e-13}
# K rows (0, 1, one 256-row block, its edge, several blocks), M columns (SIMD tails)
SHAPES = [(0, 5), (1, 1), (7, 33), (255, 17), (256, 16), (257, 128), (1500, 129)]


def _rel(out, ref):
    if ref.numel() == 0:
        return 0.0
    return rel_err(out, ref) if ref.abs().max() > 0 else out.abs().max().item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K,M", SHAPES)
@pytest.mark.parametrize("J", [1, 2, 3, 4])
def test_tall_product_matches_float64(dtype, K, M, J):
    torch.manual_seed(K + M + J)
    x = torch.randn(K, M, dtype=dtype)
    b = torch.randn(K, J, dtype=dtype)
    out = T.buffer_mm(x.t(), b)
    assert out.shape == (M, J) and out.dtype == dtype
    assert _rel(out, x.double().t() @ b.double()) < TOL[dtype]
    # B strided: a column slice of a wider matrix, and a transposed one
    wide = torch.randn(K, J + 3, dtype=dtype)
    bt = torch.randn(J, K, dtype=dtype).t()
    for bb in (wide[:, 1 : J + 1], bt):
        assert _rel(T.buffer_mm(x.t(), bb), x.double().t() @ bb.double()) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K,M", SHAPES)
@pytest.mark.parametrize("J", [1, 2, 5, 8])
def test_row_product_matches_float64(dtype, K, M, J):
    torch.manual_seed(K + M + J)
    x = torch.randn(K, M + 2, dtype=dtype)[:, 1 : M + 1]  # rows of stride M + 2
    r = torch.randn(J, M, dtype=dtype).t()
    out = T.buffer_mm(x, r)
    assert out.shape == (K, J) and out.dtype == dtype
    assert _rel(out, x.double() @ r.double()) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K,M", SHAPES)
def test_column_sums_match_float64(dtype, K, M):
    torch.manual_seed(K + M)
    x = torch.randn(K, M, dtype=dtype)
    out = T.column_sums(x)
    assert out.shape == (M,) and out.dtype == dtype
    assert _rel(out, x.double().sum(0)) < TOL[dtype]


# Wide X^T B (J > 4 columns, whole vectors of J, K > 768 rows): M from 1 to 256, SIMD tiles
# and their tails; J the widths dW_hh has at H = 8..64 (J = 8: wide for float64 only, one
# 64-byte vector; float32 takes MKL there).
WIDE = [(769, 1), (1001, 99), (928, 256), (3000, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K,M", WIDE)
@pytest.mark.parametrize("J", [8, 16, 32, 48, 64])
def test_wide_product_matches_float64(dtype, K, M, J):
    torch.manual_seed(K + M + J)
    x = torch.randn(K, M + 5, dtype=dtype)[:, 2 : M + 2]  # dG's columns: rows of stride M + 5
    b = torch.randn(K, 2 * J, dtype=dtype)[:, J:]  # one direction of a bidirectional output
    if J * x.element_size() < 64:  # MKL's product, whose bits may change with its threads
        out = T.buffer_mm(x.t(), b)
    else:
        out = _same_bits_at_one_and_two_threads(lambda: (T.buffer_mm(x.t(), b),))[0]
    assert out.shape == (M, J) and out.dtype == dtype
    # sums of up to 3000 products: MKL's float32 (J = 8) is 2.2e-6 off at K = 3000
    assert _rel(out, x.double().t() @ b.double()) < 4 * TOL[dtype]


def test_wide_products_run_where_they_apply():
    """The wide pass runs (not MKL's bits) for whole vectors of J at K > 768; at J = 33, K =
    768, or with B's columns strided, buffer_mm is MKL's mm."""
    torch.manual_seed(4)
    x = torch.randn(1001, 96)
    wide = torch.randn(1001, 32)
    assert not torch.equal(T.buffer_mm(x.t(), wide), torch.mm(x.t(), wide))
    for a, b in (
        (x.t(), torch.randn(1001, 33)),
        (x[:768].t(), torch.randn(768, 32)),
        (x.t(), torch.randn(32, 1001).t()),
        (x.t(), torch.randn(1001, 80)),
    ):
        assert torch.equal(T.buffer_mm(a, b), torch.mm(a, b))
    with tuning.override(thin=False):
        assert torch.equal(T.buffer_mm(x.t(), wide), torch.mm(x.t(), wide))
    # J = 8: one 64-byte vector of float64 (the wide pass), half of one of float32 (MKL)
    x64, b64 = x.double(), torch.randn(1001, 8, dtype=torch.float64)
    assert not torch.equal(T.buffer_mm(x64.t(), b64), torch.mm(x64.t(), b64))
    b32 = b64.float()
    assert torch.equal(T.buffer_mm(x.t(), b32), torch.mm(x.t(), b32))


def test_wider_products_and_the_knob_keep_mkl():
    """Beyond the thin limits, and with thin=False, buffer_mm is MKL's mm: the same bits."""
    torch.manual_seed(0)
    x = torch.randn(300, 40)
    for a, b in ((x.t(), torch.randn(300, 5)), (x, torch.randn(40, 9))):
        assert torch.equal(T.buffer_mm(a, b), torch.mm(a, b))
    # the thin passes really run: another summation order than MKL's, in the last bits
    tall, tb = torch.randn(2000, 64).t(), torch.randn(2000, 1)
    assert not torch.equal(T.buffer_mm(tall, tb), torch.mm(tall, tb))
    with tuning.override(thin=False):
        assert torch.equal(T.buffer_mm(tall, tb), torch.mm(tall, tb))
        for a, b in ((x.t(), torch.randn(300, 2)), (x, torch.randn(40, 3))):
            assert torch.equal(T.buffer_mm(a, b), torch.mm(a, b))
        s = torch.randn(300, 40)
        assert torch.equal(T.column_sums(s), torch.mv(s.t(), torch.ones(300)))


def _same_bits_at_one_and_two_threads(run):
    """run() at 1 and at 2 threads: the same bits in every result; returns them."""
    prev = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(run())
    finally:
        torch.set_num_threads(prev)
    for one, two in zip(*outs):
        assert torch.equal(one, two)
    return outs[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_at_one_and_two_threads(dtype):
    """Row blocks of fixed size, added in block order: the thread count changes no bit (the
    ops promise results independent of it)."""
    torch.manual_seed(1)
    x = torch.randn(3000, 70, dtype=dtype)
    b = torch.randn(3000, 3, dtype=dtype)
    r = torch.randn(70, 6, dtype=dtype)
    _same_bits_at_one_and_two_threads(
        lambda: (T.buffer_mm(x.t(), b), T.buffer_mm(x, r), T.column_sums(x))
    )


def test_mismatched_shapes_raise_mms_error():
    """A product whose shapes do not chain is not run by the passes: at::mm's error."""
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        T.buffer_mm(torch.randn(3, 4), torch.randn(5, 2))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        T.buffer_mm(torch.randn(4, 3).t(), torch.randn(5, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_taller_than_256_blocks_uses_longer_blocks(dtype):
    """Past 256 * 256 rows the blocks grow (at most 256 partial rows are kept): still the
    float64 result, and the same bits at 1 and 2 threads."""
    torch.manual_seed(2)
    x = torch.randn(70001, 19, dtype=dtype)
    b = torch.randn(70001, 2, dtype=dtype)
    prod, sums = _same_bits_at_one_and_two_threads(
        lambda: (T.buffer_mm(x.t(), b), T.column_sums(x))
    )
    assert _rel(prod, x.double().t() @ b.double()) < 10 * TOL[dtype]
    assert _rel(sums, x.double().sum(0)) < 10 * TOL[dtype]


def _one_row_run(cell, dtype, H, I):
    """A cell step at B = 1, forward and backward (input, state and weight gradients): its
    GEMMs have one row, so they run as thin_row (cpu_backend.h)."""
    torch.manual_seed(3)
    ref = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell]
    ref = ref(I, H, dtype=torch.float64)
    fused = fusedrnn.from_torch(ref).to(dtype)
    x = torch.randn(1, I, dtype=torch.float64)
    h = torch.randn(1, H, dtype=torch.float64)
    hx = (h, torch.randn(1, H, dtype=torch.float64)) if cell == "lstm" else h
    g = torch.randn(1, H, dtype=torch.float64)

    def grads(module, cast):
        xs = x.to(cast).requires_grad_()
        states = [s.to(cast).requires_grad_() for s in (hx if cell == "lstm" else (hx,))]
        out = module(xs, tuple(states) if cell == "lstm" else states[0])
        out = out[0] if cell == "lstm" else out
        return [out, *torch.autograd.grad(out, [xs, *states, *module.parameters()], g.to(cast))]

    return grads(fused, dtype), grads(ref, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("H,I", [(1, 1), (33, 5), (300, 129)])
def test_one_row_gemms_match_float64_with_the_knob_either_way(dtype, cell, H, I):
    """B = 1 steps use thin_row (RowDot for a W^T, TallDot for a W; += for a beta of 1), or MKL
    with the knob off: both give float64 torch.nn's numbers, and at H = 300 (RowDot split over
    threads) different bits, so the pass did run."""
    runs = []
    for thin in (True, False):
        with tuning.override(thin=thin):
            fused, ref = _one_row_run(cell, dtype, H, I)
        for a, b in zip(fused, ref):
            assert _rel(a.double(), b) < (5e-6 if dtype == torch.float32 else 1e-12)
        runs.append(fused)
    if H == 300 and dtype == torch.float32:
        assert not all(torch.equal(a, b) for a, b in zip(*runs))
    _same_bits_at_one_and_two_threads(lambda: _one_row_run(cell, dtype, H, I)[0])


def _cell_case(cell, dtype, H, I, bias):
    torch.manual_seed(H * 131 + I)
    cls = {"rnn_tanh": fusedrnn.RNNCell, "rnn_relu": fusedrnn.RNNCell, "lstm": fusedrnn.LSTMCell,
           "gru": fusedrnn.GRUCell}[cell]  # fmt: skip
    kw = {"nonlinearity": cell[4:]} if cell.startswith("rnn") else {}
    module = cls(I, H, bias=bias, **kw).to(dtype)
    x = torch.randn(1, I, dtype=dtype)
    h = torch.randn(1, H, dtype=dtype)
    hx = (h, torch.randn(1, H, dtype=dtype)) if cell == "lstm" else h
    return module, x, hx


def _as_list(out):
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("H,I", [(1, 1), (33, 7), (100, 1), (256, 128)])
@pytest.mark.parametrize("bias", [True, False])
def test_one_row_step_keeps_the_general_paths_bits(dtype, cell, H, I, bias):
    """A B = 1 step without a workspace (no_grad; the Elman cell always) runs the one-row step
    (cpp/cpu/one_row_step.h: blocks of 32 units, threaded at H = 256). LSTM / GRU in grad
    mode keep their workspace and take cell_forward's general path: the same bits. Every
    family matches float64 torch.nn, at 1 and 2 threads with the same bits."""
    module, x, hx = _cell_case(cell, dtype, H, I, bias)
    with torch.no_grad():
        one_row = _as_list(module(x, hx))
    if cell in ("lstm", "gru"):
        general = _as_list(module(x.clone().requires_grad_(), hx))
        assert all(torch.equal(a, b.detach()) for a, b in zip(one_row, general))
    ref_module = module.to_torch().double()
    states = tuple(s.double() for s in hx) if cell == "lstm" else hx.double()
    with torch.no_grad():
        ref = _as_list(ref_module(x.double(), states))
    for a, b in zip(one_row, ref):
        assert _rel(a.double(), b) < (5e-6 if dtype == torch.float32 else 1e-12)

    def step():
        with torch.no_grad():
            return _as_list(module(x, hx))

    _same_bits_at_one_and_two_threads(step)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,J", [(1, 9), (7, 33), (300, 129), (1024, 256)])
def test_outer_products_are_the_products(dtype, M, J):
    """a [M, 1] b [1, J] (J > 8: the outer pass; a a strided column, as dG's row seen as
    dG^T) gives each element as the one product a_m b_j: torch.outer's and MKL's bits, at 1
    and 2 threads."""
    torch.manual_seed(M + J)
    a = torch.randn(1, M + 3, dtype=dtype)[:, 2 : 2 + M].t()
    b = torch.randn(1, J, dtype=dtype)
    out = _same_bits_at_one_and_two_threads(lambda: (T.buffer_mm(a, b),))[0]
    assert torch.equal(out, torch.outer(a[:, 0], b[0]))
    with tuning.override(thin=False):
        assert torch.equal(out, T.buffer_mm(a, b))


@pytest.mark.parametrize("thin", [True, False])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("H,I", [(1, 1), (33, 7), (256, 128)])
def test_one_row_weight_gradients_are_outer_products(thin, cell, H, I):
    """At B = 1 a weight's gradient is dG^T x: each element the product of a bias gradient
    (dG's row itself) and an input value, exactly, on the outer pass or on MKL (thin off); a
    cell step and a T = 1 layer call alike."""
    module, x, hx = _cell_case(cell, torch.float32, H, I, True)
    with tuning.override(thin=thin):
        h = hx[0] if cell == "lstm" else hx
        out = _as_list(module(x, hx))[0]
        out.backward(torch.randn_like(out))
        assert torch.equal(module.weight_ih.grad, torch.outer(module.bias_ih.grad, x[0]))
        assert torch.equal(module.weight_hh.grad, torch.outer(module.bias_hh.grad, h[0]))
        cls = {"rnn_tanh": fusedrnn.RNN, "lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[cell]
        layer = cls(I, H)
        states = tuple(s.unsqueeze(0) for s in hx) if cell == "lstm" else hx.unsqueeze(0)
        seq, _ = layer(x.unsqueeze(0), states)
        seq.backward(torch.randn_like(seq))
        assert torch.equal(layer.weight_ih_l0.grad, torch.outer(layer.bias_ih_l0.grad, x[0]))
        assert torch.equal(layer.weight_hh_l0.grad, torch.outer(layer.bias_hh_l0.grad, h[0]))
