"""The CPU's threaded paths give torch.nn's results: the row-parallel time loop (each thread
runs all steps of its own batch rows; forced here down to one row per thread, with uneven
chunks) and the row-split pointwise pass of large steps. The thresholds are read once per
process from the environment, so each configuration runs in a fresh process."""

import os

import pytest

from op_cases import run_script

SCRIPT = r"""
import json, os, torch, fusedrnn
from torch.nn.utils.rnn import pack_padded_sequence
torch.set_num_threads(int(os.environ["TEST_THREADS"]))
torch.manual_seed(0)
from op_cases import rel_err
errs = {}

def compare(key, m, x, hx=None, lengths=None):
    f = fusedrnn.from_torch(m)
    params = list(m.parameters())
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
    yt, st = m(inp, hx)
    yf, sf = f(inp, hx)
    if lengths is not None:
        yt, yf = yt.data, yf.data
    st = st if isinstance(st, tuple) else (st,)
    sf = sf if isinstance(sf, tuple) else (sf,)
    outs_t, outs_f = [yt, *st], [yf, *sf]
    gs = [torch.randn_like(o) for o in outs_t]
    leaves = [x] + ([hx] if torch.is_tensor(hx) else list(hx or ()))
    gt = torch.autograd.grad(outs_t, leaves + params, gs, retain_graph=True)
    gf = torch.autograd.grad(outs_f, leaves + list(f.parameters()), gs)
    errs[key] = max([rel_err(a, b) for a, b in zip(outs_f, outs_t)]
                    + [rel_err(a, b) for a, b in zip(gf, gt)])

d = torch.float64
B, T, I, H = 7, 6, 3, 5
lengths = torch.tensor([6, 2, 5, 6, 1, 3, 4])
for name, make in {
    "rnn_tanh": lambda i: torch.nn.RNN(i, H, 2, bidirectional=True),
    "rnn_relu": lambda i: torch.nn.RNN(i, H, 2, nonlinearity="relu", bidirectional=True),
    "lstm": lambda i: torch.nn.LSTM(i, H, 2, bidirectional=True),
    "lstm_proj": lambda i: torch.nn.LSTM(i, H, 2, bidirectional=True, proj_size=2),
    "gru": lambda i: torch.nn.GRU(i, H, 2, bidirectional=True),
    "gru_nobias": lambda i: torch.nn.GRU(i, H, 1, bias=False),
}.items():
    m = make(I).to(d)
    P = getattr(m, "proj_size", 0) or H
    L = m.num_layers * (2 if m.bidirectional else 1)
    x = torch.randn(T, B, I, dtype=d, requires_grad=True)
    h0 = torch.randn(L, B, P, dtype=d, requires_grad=True)
    hx = (h0, torch.randn(L, B, H, dtype=d, requires_grad=True)) if "lstm" in name else h0
    compare(f"{name}-padded", m, x, hx)
    compare(f"{name}-packed", m, x, hx, lengths)
    xw = torch.randn(T, B, 20, dtype=d, requires_grad=True)  # I > 16: the all-steps xg GEMM
    compare(f"{name}-wide", make(20).to(d), xw)
# Large steps: the step is not row-split, the pointwise pass is split over threads instead.
for name, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
    m = cls(4, 40)
    compare(f"{name}-large-batch", m, torch.randn(3, 600, 4, requires_grad=True))
print(json.dumps({"threads": torch.get_num_threads(), "errs": errs}))
"""

CONFIGS = {
    # Three threads over 7 rows: chunks of 2, 2 and 3 rows; packed rows drop out mid-chunk.
    "row-chunks": {"FUSEDRNN_CHUNK_ROWS": "1", "TEST_THREADS": "3"},
    # No row chunks: MKL threads the GEMMs, the pointwise pass splits its rows.
    "split-pointwise": {"FUSEDRNN_CHUNK_ROWS": "100000", "TEST_THREADS": "2"},
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_threaded_paths_match_torch(config):
    env = dict(os.environ, **CONFIGS[config])
    res = run_script(SCRIPT, env, timeout=600)
    assert res["threads"] == int(CONFIGS[config]["TEST_THREADS"])
    assert len(res["errs"]) == 6 * 3 + 3
    for key, err in res["errs"].items():
        tol = 1e-5 if "large-batch" in key else 1e-10
        assert err < tol, (config, key, err)
