"""The backward's per-step dh = dG W_hh in registers (cpp/cpu/narrow_gemm.h) on the AVX2 and
AVX-512 tables, for float32, H a multiple of the vector width up to 128 and two rows or more
(one row takes the thin pass): gradients match float64 torch.nn for every column-block shape
and row-group tail, the bits do not depend on the thread count, and MKL's log shows where it
ran (no per-step SGEMM left) and where it did not. The layers' fused-step parity tests
(test_cpu_fused_steps.py) run it through their backward too."""

import os
import re
import subprocess
import sys

import pytest
import torch

import fusedrnn
from fusedrnn import tuning

from op_cases import cpu_has, rel_err

CELLS = {
    "LSTM": (torch.nn.LSTMCell, fusedrnn.LSTMCell),
    "GRU": (torch.nn.GRUCell, fusedrnn.GRUCell),  # adds its dh to the direct z dh (+=)
    "RNN_TANH": (torch.nn.RNNCell, fusedrnn.RNNCell),
}


def _cell_grads(mode, H, B, threads=None):
    """Gradients of a float32 fused cell and of float64 torch.nn's (input, states, weights)."""
    torch.manual_seed(0)
    ref_cls, fused_cls = CELLS[mode]
    ref = ref_cls(5, H).double()
    fused = fused_cls(5, H)
    fused.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    n_states = 2 if mode == "LSTM" else 1
    leaves = [torch.randn(B, 5, dtype=torch.float64)]
    leaves += [torch.randn(B, H, dtype=torch.float64) for _ in range(n_states)]
    seeds = [torch.randn(B, H, dtype=torch.float64) for _ in range(n_states)]

    def grads(m, dtype):
        xs = [t.to(dtype).requires_grad_() for t in leaves]
        out = m(xs[0], tuple(xs[1:]) if mode == "LSTM" else xs[1])
        outs = out if mode == "LSTM" else (out,)
        return torch.autograd.grad(outs, xs + list(m.parameters()), [s.to(dtype) for s in seeds])

    prev = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        got = grads(fused, torch.float32)
    finally:
        torch.set_num_threads(prev)
    return got, grads(ref, torch.float64)


# On AVX-512 (16 lanes, blocks of up to 4 vectors): H = 16, 32, 48 one block of 1-3 vectors
# (12-14 rows a group); 80, 112 a 4-vector block and a 1- or 3-vector one; 128 two full ones.
# On AVX2 (8 lanes, blocks of 2): 24 and 40 end on a 1-vector block. B = 13: full row groups
# and a tail; 600: groups split over threads (a cell step outside the row-parallel loops).
@pytest.mark.parametrize("H", [16, 24, 32, 40, 48, 80, 112, 128])
@pytest.mark.parametrize("B", [2, 13, 600])
@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_backward_matches_float64(mode, H, B):
    got, ref = _cell_grads(mode, H, B)
    assert max(rel_err(g, r) for g, r in zip(got, ref)) < 2e-5


@pytest.mark.parametrize("mode", list(CELLS))
def test_bits_do_not_depend_on_threads(mode):
    one, _ = _cell_grads(mode, 64, 600, threads=1)
    two, _ = _cell_grads(mode, 64, 600, threads=2)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("mode", list(CELLS))
def test_switching_off_changes_only_rounding(mode):
    got, ref = _cell_grads(mode, 64, 13)
    with tuning.override(fuse=False):
        plain, _ = _cell_grads(mode, 64, 13)
    assert max(rel_err(g, p) for g, p in zip(got, plain)) < 2e-5


SCRIPT = r"""
import os, torch, fusedrnn
torch.manual_seed(0)
mode, H = os.environ["TEST_MODE"], int(os.environ["TEST_H"])
m = getattr(fusedrnn, mode)(3, H)
x = torch.randn(10, 13, 3)
with fusedrnn.tuning.override(fuse=os.environ["TEST_FUSE"] == "1"):
    y, _ = m(x)
    y.sum().backward()
"""

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _dh_sgemms(mode, cap, H, fuse):
    """How many MKL calls of the backward's dh = dG W_hh shape (N, N, H, rows, G H) a layer's
    training step made, from MKL's verbose log (None without MKL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FUSEDRNN_NO_FUSE", "MKL_VERBOSE")}
    env.update(ATEN_CPU_CAPABILITY=cap, MKL_VERBOSE="1", TEST_MODE=mode, TEST_H=str(H),
               TEST_FUSE="1" if fuse else "0")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    if "MKL_VERBOSE" not in out.stdout:
        return None
    pat = re.compile(rf"SGEMM(_COMPUTE)?\((N|P),N,{H},\d+,{GATES[mode] * H},")
    return sum(1 for line in out.stdout.splitlines() if pat.search(line))


# H = 24 is a multiple of AVX2's 8 lanes only; 144 is above kNarrowMaxN; the portable table
# has no kernel.
@pytest.mark.parametrize("mode", list(GATES))
@pytest.mark.parametrize(
    "cap,H,runs",
    [("avx512", 64, True), ("avx512", 24, False), ("avx512", 144, False), ("avx2", 24, True),
     ("avx2", 64, True), ("default", 64, False)],
)  # fmt: skip
def test_where_the_register_dh_runs(mode, cap, H, runs):
    if cap != "default" and not cpu_has(cap):
        pytest.skip(f"CPU lacks {cap}")
    on, off = _dh_sgemms(mode, cap, H, True), _dh_sgemms(mode, cap, H, False)
    if on is None:
        pytest.skip("torch's BLAS is not MKL (no MKL_VERBOSE log)")
    assert off > 0
    assert on == (0 if runs else off)
