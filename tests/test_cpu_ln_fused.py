"""The fused LayerNorm forward step on the CPU (cpp/cpu/ln_fused.h: the recurrent GEMM in
registers into an L1 block, then the LN pass on it) gives the float64 readable reference's
results, at inference and in training (where the pass writes the workspace, one row at a
time, and backward reads it). It runs for float32, batches up to 64 rows, H a multiple of 16
up to 128 and more than one step, on the AVX-512 table only; everything else takes the BLAS +
pass path, which the same checks cover (test_layernorm.py covers it in depth)."""

import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import layernorm, tuning

from op_cases import cpu_has, ln_module, rel_err, run_script

CLS = {"LSTM": fusedrnn.LayerNormLSTM, "GRU": fusedrnn.LayerNormGRU}


def _modules(mode, I, H, layers=1, bidirectional=False, bias=True):
    """A float32 module (LayerNorm weights away from 1 / 0) and a float64 copy."""
    fam = "ln_lstm" if mode == "LSTM" else "ln_gru"
    m = ln_module(fam, I, H, layers, bidirectional, bias, dtype=torch.float32)
    m64 = ln_module(fam, I, H, layers, bidirectional, bias)
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    return m, m64


def _max_error(mode, H, I, B, T=5, layers=1, bidirectional=False, bias=True, lengths=None):
    """Largest relative error of the float32 module at inference against the float64
    reference (reference_stack: LayerNorm in plain torch ops): output and final states."""
    m, m64 = _modules(mode, I, H, layers, bidirectional, bias)
    D = layers * (2 if bidirectional else 1)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(D, B, H, dtype=torch.float64)
    c0 = torch.randn(D, B, H, dtype=torch.float64) if mode == "LSTM" else None
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
    hx = (h0, c0) if mode == "LSTM" else h0
    packed = lengths is not None
    rx, rh0, rc0, bs = x, h0, c0, None
    if packed:  # the reference takes the packed rows and states in the sorted batch order
        order = inp.sorted_indices
        rx, bs = inp.data, inp.batch_sizes
        rh0 = h0.index_select(1, order)
        rc0 = c0.index_select(1, order) if c0 is not None else None
    with torch.no_grad():
        y, hn = m(inp.to(torch.float32), tuple(s.float() for s in hx) if mode == "LSTM"
                  else hx.float())  # fmt: skip
        fam = "ln_lstm" if mode == "LSTM" else "ln_gru"
        ref = layernorm.reference_stack(
            fam, rx, bs, rh0, rc0, m64._flat_weights, num_layers=layers,
            bidirectional=bidirectional, has_biases=bias, dropout=0.0, train=False,
        )  # fmt: skip
    got = [y.data if packed else y, *(hn if mode == "LSTM" else (hn,))]
    want = [ref[0], ref[1], *([ref[2]] if mode == "LSTM" else [])]
    if packed:  # the module's states come back in the caller's batch order
        want = [want[0]] + [w.index_select(1, inp.unsorted_indices) for w in want[1:]]
    return max(rel_err(a, b) for a, b in zip(got, want))


# H = 48 (3 vectors of 16) and 33 / 144 (not fused: not a multiple of 16, above 128); I = 1
# takes the one-feature input side inside the step, 3 its closed form, 40 the LN rows pass.
# B = 13: three row groups of 4 and a tail of 1; 64 the largest fused batch, 65 not fused.
@pytest.mark.parametrize("H", [16, 33, 48, 64, 128, 144])
@pytest.mark.parametrize("I", [1, 3, 40])
@pytest.mark.parametrize("B", [1, 13, 64, 65])
@pytest.mark.parametrize("mode", list(CLS))
def test_inference_matches_reference(mode, H, I, B):
    assert _max_error(mode, H, I, B) < 2e-5


@pytest.mark.parametrize("mode", list(CLS))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_stacked_bidirectional(mode, bias, packed):
    lengths = torch.tensor([5, 2, 4, 5, 1, 3, 4]) if packed else None
    err = _max_error(mode, 32, 1, 7, layers=2, bidirectional=True, bias=bias, lengths=lengths)
    assert err < 2e-5


def _training_errors(mode, H, I, B, T=5, layers=1, bidirectional=False):
    """Largest relative errors of the float32 module's training step against the float64
    reference (autograd through reference_stack): output, h_n, and every gradient."""
    m, m64 = _modules(mode, I, H, layers, bidirectional)
    torch.manual_seed(1)
    x = torch.randn(T, B, I, dtype=torch.float64)
    g = torch.randn(T, B, H * (2 if bidirectional else 1), dtype=torch.float64)
    x32 = x.float().requires_grad_()
    y, hn = m(x32)
    h_n = hn[0] if mode == "LSTM" else hn
    (y * g.float()).sum().add(h_n.pow(2).sum()).backward()
    fam = "ln_lstm" if mode == "LSTM" else "ln_gru"
    x64 = x.clone().requires_grad_()
    ref = layernorm.reference_stack(
        fam, x64, None, None, None, m64._flat_weights, num_layers=layers,
        bidirectional=bidirectional, has_biases=True, dropout=0.0, train=True,
    )  # fmt: skip
    (ref[0] * g).sum().add(ref[1].pow(2).sum()).backward()
    pairs = [(y, ref[0]), (h_n, ref[1]), (x32.grad, x64.grad)]
    pairs += [(p.grad, q.grad) for p, q in zip(m.parameters(), m64.parameters())]
    return [rel_err(a.detach(), b.detach()) for a, b in pairs]


# Training: the same shapes' edges (row-group tails at B = 13, one row, the largest batch).
@pytest.mark.parametrize("H", [16, 48, 128])
@pytest.mark.parametrize("I", [1, 3, 40])
@pytest.mark.parametrize("B", [1, 13, 64])
@pytest.mark.parametrize("mode", list(CLS))
def test_training_matches_reference(mode, H, I, B):
    assert max(_training_errors(mode, H, I, B)) < 2e-4


@pytest.mark.parametrize("mode", list(CLS))
def test_training_stacked_bidirectional(mode):
    assert max(_training_errors(mode, 32, 1, 7, layers=2, bidirectional=True)) < 2e-4


@pytest.mark.parametrize("mode", list(CLS))
@pytest.mark.parametrize("train", [False, True])
def test_same_bits_as_the_blas_path(mode, train):
    """The register GEMM sums each product in the BLAS kernel's order here (MKL, AVX-512), so
    switching the step off (fusedrnn.tuning fuse=False) changes no bit of the forward, at
    inference or in training (where the backward then reads the same workspace: same
    gradients; the knob also switches the backward's register dh, so those are compared with
    it on)."""
    m, _ = _modules(mode, 3, 64, layers=2)
    x = torch.randn(7, 32, 3)
    with torch.set_grad_enabled(train):
        fused, _ = m(x)
        with tuning.override(fuse=False):
            plain, _ = m(x)
    assert torch.equal(fused, plain)


SCRIPT = r"""
import json, os, torch, fusedrnn
torch.manual_seed(0)
cls = getattr(fusedrnn, os.environ["TEST_CLS"])
m = cls(1, 128)
x = torch.randn(6, int(os.environ["TEST_B"]), 1)
misses = []
for fuse in (True, False):
    fusedrnn.empty_cpu_cache()
    before = fusedrnn.cpu_cache_info()["misses"]
    with fusedrnn.tuning.override(fuse=fuse), torch.set_grad_enabled(os.environ["TEST_TRAIN"] == "1"):
        m(x)
    misses.append(fusedrnn.cpu_cache_info()["misses"] - before)
print(json.dumps({"fused": misses[0], "blas": misses[1]}))
"""


# At H = 128 and B = 64 the BLAS path's [B, G H] buffer for h W_hh^T (128-256 KiB) comes from
# the CPU buffer cache (blocks of 64 KiB and up); the fused step has none. So the fused step
# ran where a call takes one cache block fewer, at inference and in training (the forward
# only: the script runs no backward).
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("mode", list(CLS))
@pytest.mark.parametrize(
    "cap,B,fused",
    [("avx512", 64, True), ("avx512", 65, False), ("avx2", 64, False), ("default", 64, False)],
)
def test_where_the_fused_step_runs(mode, cap, B, fused, train):
    if cap != "default" and not cpu_has(cap):
        pytest.skip(f"CPU lacks {cap}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FUSEDRNN_NO_FUSE", "FUSEDRNN_CPU_CACHE_MB")}  # fmt: skip
    env.update(ATEN_CPU_CAPABILITY=cap, TEST_CLS=CLS[mode].__name__, TEST_B=str(B),
               TEST_TRAIN=str(int(train)))  # fmt: skip
    got = run_script(SCRIPT, env, timeout=300)
    assert got["blas"] - got["fused"] == (1 if fused else 0), got
