"""The fused small-H LSTM step on the CPU (cpp/cpu/lstm_fused.h: the recurrent GEMM in
registers, feeding the gate math) gives torch.nn's results, forward and through backward
(which reads the workspace it writes). It runs for float32, no projection, H a multiple of the
vector width (16 on AVX-512, 8 on AVX2) up to 128, and more than one step; everything else
takes the BLAS + pointwise path, which the same checks cover."""

import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn

from op_cases import rel_err, run_script


def _max_error(H, I, B, T=5, bias=True, layers=1, bidirectional=False, lengths=None, seed=0):
    """Largest relative error of a float32 fused LSTM against float64 torch.nn (outputs,
    final states, and the gradients of input, states and weights)."""
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(I, H, layers, bias=bias, bidirectional=bidirectional).double()
    fused = fusedrnn.LSTM(I, H, layers, bias=bias, bidirectional=bidirectional)
    fused.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    D = layers * (2 if bidirectional else 1)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0, c0 = torch.randn(D, B, H, dtype=torch.float64), torch.randn(D, B, H, dtype=torch.float64)
    leaves_r = [t.clone().requires_grad_() for t in (x, h0, c0)]
    leaves_f = [t.float().requires_grad_() for t in (x, h0, c0)]

    def run(m, xx, h, c):
        inp = xx if lengths is None else pack_padded_sequence(xx, lengths, enforce_sorted=False)
        y, (hn, cn) = m(inp, (h, c))
        return [y if lengths is None else y.data, hn, cn]

    outs_r, outs_f = run(ref, *leaves_r), run(fused, *leaves_f)
    seeds = [torch.randn_like(o) for o in outs_r]
    grads_r = torch.autograd.grad(outs_r, leaves_r + list(ref.parameters()), seeds)
    grads_f = torch.autograd.grad(
        outs_f, leaves_f + list(fused.parameters()), [s.float() for s in seeds]
    )
    errs = [rel_err(f, r) for f, r in zip(outs_f, outs_r)]
    errs += [rel_err(f, r) for f, r in zip(grads_f, grads_r)]
    return max(errs)


# H = 24 and 40 are fused only on AVX2 (8 lanes), 144 never (above 128); inputs up to 256
# wide (I = 1, 3, 40, layer 2 of the stacked cases) are projected inside the fused loop,
# I = 300 by one GEMM before it.
@pytest.mark.parametrize("H", [16, 24, 32, 40, 128, 144])
@pytest.mark.parametrize("I", [1, 3, 40, 300])
@pytest.mark.parametrize("B", [1, 7, 13])
def test_fused_lstm_matches_torch(H, I, B):
    assert _max_error(H, I, B) < 2e-5


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_lstm_stacked_bidirectional(bias, packed):
    lengths = torch.tensor([5, 2, 4, 5, 1, 3, 4]) if packed else None
    err = _max_error(32, 1, 7, bias=bias, layers=2, bidirectional=True, lengths=lengths)
    assert err < 2e-5


def test_fused_lstm_large_step_splits_rows():
    # 2 B (4H) H = 78 MFLOP per step: above the row-parallel time loop's limit, so the fused
    # step itself splits its row groups over threads.
    assert _max_error(128, 3, 600, T=3) < 2e-5


SCRIPT = r"""
import json, os, torch, fusedrnn
from op_cases import rel_err
torch.set_num_threads(int(os.environ["TEST_THREADS"]))
torch.manual_seed(0)
m = fusedrnn.LSTM(1, 32, 2)
x = torch.randn(6, 37, 1)
with torch.no_grad():
    y, (h, c) = m(x)
ref = torch.nn.LSTM(1, 32, 2).double()
ref.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
with torch.no_grad():
    yr, (hr, cr) = ref(x.double())
err = max(rel_err(a, b) for a, b in ((y, yr), (h, hr), (c, cr)))
print(json.dumps({"err": err, "y": y.flatten()[:4096].tolist()}))
"""


def _run(cap, no_fuse, threads=2):
    env = {k: v for k, v in os.environ.items() if k != "FUSEDRNN_NO_FUSE"}
    env.update(ATEN_CPU_CAPABILITY=cap, TEST_THREADS=str(threads))
    if no_fuse:
        env["FUSEDRNN_NO_FUSE"] = "1"
    return run_script(SCRIPT, env, timeout=300)


def _cpu_has(cap):
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return {"avx2": " avx2 ", "avx512": " avx512f "}[cap] in flags.replace("\n", " ")


@pytest.mark.parametrize("cap", ["avx2", "avx512"])
def test_fused_step_runs_and_can_be_switched_off(cap):
    """Under each SIMD table the fused and the BLAS paths both match torch.nn, and they are
    different code (their float32 sums differ in the last bits), so the fused path did run;
    FUSEDRNN_NO_FUSE=1 selects the BLAS path. 37 rows over 2 threads: row-parallel loops."""
    if not _cpu_has(cap):
        pytest.skip(f"CPU lacks {cap}")
    fused, plain = _run(cap, no_fuse=False), _run(cap, no_fuse=True)
    assert fused["err"] < 2e-5 and plain["err"] < 2e-5
    assert fused["y"] != plain["y"]
