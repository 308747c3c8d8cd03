"""``fusedrnn check``: checks every fused module against ``torch.nn`` on this machine.

For each cell (RNN tanh/relu, LSTM, LSTM with projection, GRU and the three cells), over a
few shapes and both float32 and float64, it loads the same weights into the fused module and
the torch one and compares outputs, final states, the input gradient and every parameter
gradient; it also runs a float64 gradcheck of each layer op. It prints a table of the worst
relative errors and exits non-zero if any check fails. Use it after installing on a new
machine, or with ``--device cuda`` to check the GPU kernels against cuDNN (TF32 off for
both, so float32 is compared in true float32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings

import torch

import fusedrnn
from fusedrnn.experiments._common import device

# name -> (torch class, constructor kwargs)
MODULES = {
    "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, {"proj_size": 3}),
    "gru": (torch.nn.GRU, {}),
}
CELLS = {
    "rnn_cell": (torch.nn.RNNCell, {}),
    "lstm_cell": (torch.nn.LSTMCell, {}),
    "gru_cell": (torch.nn.GRUCell, {}),
}
# (T, B, I, H, layers, bidirectional, batch_first)
SHAPES = [(1, 1, 1, 5, 1, False, False), (7, 3, 4, 33, 2, True, True), (40, 8, 16, 64, 1, False, False)]  # fmt: skip
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# On CUDA, cuDNN and cuBLAS sum in other orders than each other (and than the CPU's GEMMs): the
# float32 rows of make gpu-check's table (T = 100-200) differ from cuDNN by 7e-6 to 9e-6, and
# tests/test_cuda.py holds cuDNN parity to 1e-4. A wrong kernel is off by far more (1e-3 for
# weights scaled by 1.001).
TOL_CUDA = {torch.float32: 1e-4, torch.float64: 1e-10}


def tolerance(dtype: torch.dtype, device: str) -> float:
    return (TOL_CUDA if str(device).startswith("cuda") else TOL)[dtype]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item() if b.numel() else 0.0
    return (a - b).abs().max().item() / scale if scale else (a - b).abs().max().item()


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    flat = []
    for o in out:
        flat.extend(_outputs(o))
    return flat


def compare(mod_t: torch.nn.Module, x: torch.Tensor) -> float:
    """Worst relative error of outputs and all gradients between mod_t and its fused copy."""
    mod_f = fusedrnn.from_torch(mod_t)
    xt = x.clone().requires_grad_()
    xf = x.clone().requires_grad_()
    ot, of = _outputs(mod_t(xt)), _outputs(mod_f(xf))
    errs = [_rel(a, b) for a, b in zip(of, ot, strict=True)]
    cot = [torch.randn_like(o) for o in ot]
    gt = torch.autograd.grad(ot, [xt, *mod_t.parameters()], cot)
    gf = torch.autograd.grad(of, [xf, *mod_f.parameters()], cot)
    errs += [_rel(a, b) for a, b in zip(gf, gt, strict=True)]
    return max(errs)


def gradcheck_op(name: str) -> bool:
    fam = name.replace("_proj", "")
    H, P = 4, (2 if name == "lstm_proj" else 0)
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[fam]
    d = {"dtype": torch.float64, "requires_grad": True}
    x = torch.randn(3, 2, 3, **d)
    w = [torch.randn(G * H, 3, **d), torch.randn(G * H, P or H, **d), torch.randn(G * H, **d),
         torch.randn(G * H, **d)]  # fmt: skip
    if fam == "lstm":
        w_hr = torch.randn(P, H, **d) if P else None
        fn = lambda *a: fusedrnn.lstm_layer(*a, w_hr=w_hr)  # noqa: E731
    elif fam == "gru":
        fn = fusedrnn.gru_layer
    else:
        fn = lambda *a: fusedrnn.rnn_layer(*a, nonlinearity=fam.split("_")[1])  # noqa: E731
    return torch.autograd.gradcheck(fn, (x, *w), eps=1e-6, atol=1e-7, raise_exception=False)


@contextlib.contextmanager
def true_float32():
    """TF32 off for cuDNN and cuBLAS while checking. cuDNN's RNNs use TF32 by default on
    Ampere and later, so torch.nn's float32 results there are ~1e-3 off true float32 (seen on
    an H200: every float32 sequence check failed, rnn_relu at 0.3), while the fused CUDA ops
    follow torch.backends.cuda.matmul.allow_tf32, which is off by default. tests/test_cuda.py
    runs every test inside it too."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def run_checks(device: str = "cpu", quick: bool = False) -> list[dict]:
    """One row per check: ``check``, ``dtype``, ``max_rel_err``, ``ok``."""
    with true_float32():
        return _checks(device, quick)


def _checks(device: str, quick: bool) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    shapes = SHAPES[:2] if quick else SHAPES
    for dtype in (torch.float32, torch.float64):
        for name, (cls, kw) in MODULES.items():
            worst = 0.0
            for T, B, I, H, L, bi, bf in shapes:
                if kw.get("proj_size", 0) >= H:
                    continue
                m = cls(I, H, num_layers=L, bidirectional=bi, batch_first=bf, **kw)
                m = m.to(device=device, dtype=dtype)
                x = torch.randn(B, T, I) if bf else torch.randn(T, B, I)
                worst = max(worst, compare(m, x.to(device=device, dtype=dtype)))
            rows.append({"check": f"{name} vs torch.nn", "dtype": str(dtype).split(".")[-1],
                         "max_rel_err": worst, "ok": worst <= tolerance(dtype, device)})  # fmt: skip
        for name, (cls, kw) in CELLS.items():
            m = cls(5, 33, **kw).to(device=device, dtype=dtype)
            x = torch.randn(4, 5, device=device, dtype=dtype)
            err = compare(m, x)
            rows.append({"check": f"{name} vs torch.nn", "dtype": str(dtype).split(".")[-1],
                         "max_rel_err": err, "ok": err <= tolerance(dtype, device)})  # fmt: skip
    if device == "cpu":
        for name in MODULES:
            ok = gradcheck_op(name)
            rows.append({"check": f"{name}_layer gradcheck", "dtype": "float64",
                         "max_rel_err": float("nan"), "ok": ok})  # fmt: skip
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", type=device, default="cpu", help="device to check (cpu or cuda[:N])"
    )
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("fusedrnn check: --device cuda asked for, but CUDA is not available", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        rows = run_checks(args.device, args.quick)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        info = fusedrnn.build_info()
        print(
            f"fusedrnn {info['version']} on torch {info['torch']}, device {args.device}, "
            f"CPU kernels {info.get('cpu_kernels')}, {info['threads']} threads"
            + (", TF32 off" if args.device.startswith("cuda") else "")
        )
        print(f"{'check':28s} {'dtype':8s} {'max rel err':>12s}  result")
        for r in rows:
            err = "-" if r["max_rel_err"] != r["max_rel_err"] else f"{r['max_rel_err']:.2e}"
            print(f"{r['check']:28s} {r['dtype']:8s} {err:>12s}  {'ok' if r['ok'] else 'FAIL'}")
        bad = sum(not r["ok"] for r in rows)
        print(f"{len(rows) - bad} passed, {bad} failed in {time.perf_counter() - t0:.1f} s")
    return 0 if all(r["ok"] for r in rows) else 1
