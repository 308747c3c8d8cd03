"""The fused small-H steps on the CPU (cpp/cpu/lstm_fused.h, gru_fused.h, rnn_fused.h: the
recurrent GEMM in registers, feeding the gate math or the Elman activation) give torch.nn's
results, forward and through backward (which reads what the forward writes: the LSTM's and
GRU's workspace, the RNN's output). They run for float32, no projection, H a multiple of the
vector width (16 on AVX-512, 8 on AVX2) up to 128, and more than one step; everything else
takes the BLAS + pointwise path, which the same checks cover."""

import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn

from op_cases import cpu_has, rel_err, run_script

# mode: the torch.nn module and its keyword arguments, and the fused module.
MODES = {
    "LSTM": (torch.nn.LSTM, {}, fusedrnn.LSTM),
    "GRU": (torch.nn.GRU, {}, fusedrnn.GRU),
    "RNN_TANH": (torch.nn.RNN, {"nonlinearity": "tanh"}, fusedrnn.RNN),
    "RNN_RELU": (torch.nn.RNN, {"nonlinearity": "relu"}, fusedrnn.RNN),
}


def _max_error(mode, H, I, B, T=5, bias=True, layers=1, bidirectional=False, lengths=None):
    """Largest relative error of a float32 fused module against float64 torch.nn (outputs,
    final states, and the gradients of input, states and weights)."""
    torch.manual_seed(0)
    ref_cls, kw, fused_cls = MODES[mode]
    args = (I, H, layers)
    kw = dict(kw, bias=bias, bidirectional=bidirectional)
    ref = ref_cls(*args, **kw).double()
    fused = fused_cls(*args, **kw)
    fused.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    D = layers * (2 if bidirectional else 1)
    x = torch.randn(T, B, I, dtype=torch.float64)
    states = [torch.randn(D, B, H, dtype=torch.float64) for _ in range(2 if mode == "LSTM" else 1)]
    leaves_r = [t.clone().requires_grad_() for t in (x, *states)]
    leaves_f = [t.float().requires_grad_() for t in (x, *states)]

    def run(m, xx, *hx):
        inp = xx if lengths is None else pack_padded_sequence(xx, lengths, enforce_sorted=False)
        y, hn = m(inp, tuple(hx) if mode == "LSTM" else hx[0])
        return [y if lengths is None else y.data, *(hn if mode == "LSTM" else (hn,))]

    outs_r, outs_f = run(ref, *leaves_r), run(fused, *leaves_f)
    seeds = [torch.randn_like(o) for o in outs_r]
    grads_r = torch.autograd.grad(outs_r, leaves_r + list(ref.parameters()), seeds)
    grads_f = torch.autograd.grad(
        outs_f, leaves_f + list(fused.parameters()), [s.float() for s in seeds]
    )
    errs = [rel_err(f, r) for f, r in zip(outs_f, outs_r)]
    errs += [rel_err(f, r) for f, r in zip(grads_f, grads_r)]
    return max(errs)


# H = 24, 40 and 80 are fused only on AVX2 (8 lanes), 144 never (above 128); 48 takes the
# RNN's 1-vector column groups on AVX-512, 32 its 2-vector ones, 64 and 128 its 4-vector ones.
# Inputs up to 256 wide (I = 1, 3, 40, layer 2 of the stacked cases) are projected inside the
# fused loop, I = 300 by one GEMM before it. B = 13: a full row group and a partial one.
@pytest.mark.parametrize("H", [16, 24, 32, 40, 48, 64, 80, 128, 144])
@pytest.mark.parametrize("I", [1, 3, 40, 300])
@pytest.mark.parametrize("B", [1, 7, 13])
@pytest.mark.parametrize("mode", list(MODES))
def test_fused_step_matches_torch(mode, H, I, B):
    assert _max_error(mode, H, I, B) < 2e-5


# Each row count up to two full groups: every partial group of both tables' kernels (rows per
# group: LSTM and GRU 6 on AVX-512 and 3 on AVX2, RNN at H = 64 6 and 3; fused_gemm.h).
@pytest.mark.parametrize("B", range(2, 13))
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_fused_step_every_partial_row_group(mode, B):
    assert _max_error(mode, 64, 1, B, T=3) < 2e-5


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_step_stacked_bidirectional(mode, bias, packed):
    lengths = torch.tensor([5, 2, 4, 5, 1, 3, 4]) if packed else None
    err = _max_error(mode, 32, 1, 7, bias=bias, layers=2, bidirectional=True, lengths=lengths)
    assert err < 2e-5


@pytest.mark.parametrize("mode", list(MODES))
def test_fused_step_large_step_splits_rows(mode):
    # 2 B G H H = 20-78 MFLOP per step (G = 1, 3 or 4 gates): above the row-parallel time loop's
    # limit, so the fused step itself splits its row groups over threads.
    B = {"LSTM": 600, "GRU": 800}.get(mode, 2400)
    assert _max_error(mode, 128, 3, B, T=3) < 2e-5


SCRIPT = r"""
import json, os, torch, fusedrnn
from op_cases import rel_err
torch.set_num_threads(int(os.environ["TEST_THREADS"]))
torch.manual_seed(0)
mode, H = os.environ["TEST_MODE"], int(os.environ["TEST_H"])
if mode in ("LSTM", "GRU"):
    m, ref = getattr(fusedrnn, mode)(1, H, 2), getattr(torch.nn, mode)(1, H, 2).double()
else:
    nl = mode.split("_")[1].lower()
    m, ref = fusedrnn.RNN(1, H, 2, nonlinearity=nl), torch.nn.RNN(1, H, 2, nonlinearity=nl)
    ref = ref.double()
x = torch.randn(6, 37, 1)
with torch.no_grad():
    y, hn = m(x)
ref.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
with torch.no_grad():
    yr, hnr = ref(x.double())
pairs = [(y, yr)] + (list(zip(hn, hnr)) if mode == "LSTM" else [(hn, hnr)])
err = max(rel_err(a, b) for a, b in pairs)
print(json.dumps({"err": err, "y": y.flatten()[:4096].tolist()}))
"""


def _run(mode, cap, H, no_fuse, threads=2):
    env = {k: v for k, v in os.environ.items() if k != "FUSEDRNN_NO_FUSE"}
    env.update(ATEN_CPU_CAPABILITY=cap, TEST_THREADS=str(threads), TEST_MODE=mode, TEST_H=str(H))
    if no_fuse:
        env["FUSEDRNN_NO_FUSE"] = "1"
    return run_script(SCRIPT, env, timeout=300)


# H = 24 and 80 (3 and 10 vectors of 8) run fused only on AVX2, 48 (3 vectors of 16) takes
# the RNN's 1-vector column groups on AVX-512.
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "cap,H", [("avx2", 32), ("avx2", 24), ("avx2", 80), ("avx512", 32), ("avx512", 48)]
)
def test_fused_step_runs_and_can_be_switched_off(mode, cap, H):
    """Under each SIMD table the fused and the BLAS paths both match torch.nn, and they are
    different code (their float32 sums differ in the last bits), so the fused path did run;
    FUSEDRNN_NO_FUSE=1 selects the BLAS path. 37 rows over 2 threads: row-parallel loops."""
    if not cpu_has(cap):
        pytest.skip(f"CPU lacks {cap}")
    fused, plain = _run(mode, cap, H, no_fuse=False), _run(mode, cap, H, no_fuse=True)
    assert fused["err"] < 2e-5 and plain["err"] < 2e-5
    assert fused["y"] != plain["y"]
