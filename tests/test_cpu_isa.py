"""Every CPU kernel table (DEFAULT, AVX2, AVX-512: picked at run time, ATEN_CPU_CAPABILITY
forces one) gives torch.nn's results. Each runs in a fresh process, since the table is
chosen once per process."""

import json
import os
import subprocess
import sys

import pytest

import fusedrnn

SCRIPT = r"""
import json, torch, fusedrnn
torch.manual_seed(0)
errs = {}
for dtype in (torch.float32, torch.float64):
    for name, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        m = cls(3, 37, num_layers=2, bidirectional=True).to(dtype)  # 37: SIMD body + tail
        f = fusedrnn.from_torch(m)
        x = torch.randn(9, 5, 3, dtype=dtype, requires_grad=True)
        y_t = m(x)[0]
        y_f = f(x)[0]
        g = torch.randn_like(y_t)
        gt = torch.autograd.grad(y_t, [x, *m.parameters()], g)
        gf = torch.autograd.grad(y_f, [x, *f.parameters()], g)
        rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
        errs[f"{name}-{dtype}"] = max([rel(y_f, y_t)] + [rel(a, b) for a, b in zip(gf, gt)])
print(json.dumps({"isa": fusedrnn.build_info()["cpu_kernels"], "errs": errs}))
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
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, check=True)  # fmt: skip
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["isa"] == cap.upper()
    for key, err in res["errs"].items():
        tol = 1e-5 if "float32" in key else 1e-11
        assert err < tol, (cap, key, err)
