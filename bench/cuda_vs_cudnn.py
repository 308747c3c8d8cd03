"""Times the fused CUDA layer ops against torch.nn (cuDNN) on a GPU, with CUDA events.

    python bench/cuda_vs_cudnn.py [--dtype float32|float16|bfloat16] [--reps 50]
                                  [--workloads default|small-h] [--tf32 off|on]
                                  [--out bench/results/cuda_vs_cudnn.json]

For each workload (cell x T x B x I x H, one layer, one direction) it first validates: the
fused op's output and gradients against torch.nn's in the same dtype (max error relative to
the output scale below a per-dtype tolerance). Only then it times forward (no grad) and
forward+backward, each repetition bracketed by a pair of CUDA events on the current stream
after warm-up, and reports medians and the ratio fused / cuDNN (< 1: fused is faster).
Without a GPU it says so and exits 0; `--device cpu` runs the same validation and timing
(wall clock) on the CPU ops, to check this script without a GPU. TF32 is off by default for
both sides (cuDNN's RNNs would otherwise use it in float32 while cuBLAS does not). `small-h`
is the H <= 192 set where cuDNN's persistent kernels apply (make gpu-check runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import fusedrnn

WORKLOADS = [  # (cell, T, B, I, H)
    ("lstm", 50, 64, 256, 256),
    ("lstm", 100, 32, 512, 512),
    ("lstm", 25, 256, 1024, 1024),
    ("gru", 50, 64, 256, 256),
    ("gru", 100, 32, 512, 512),
    ("rnn_tanh", 100, 64, 256, 256),
]
SMALL_H_WORKLOADS = [  # H <= 192: cuDNN's PERSIST_STATIC_SMALL_H range
    ("lstm", 100, 64, 64, 64),
    ("lstm", 200, 32, 128, 128),
    ("lstm", 100, 64, 192, 192),
    ("gru", 100, 64, 128, 128),
    ("gru", 100, 64, 192, 192),
    ("rnn_tanh", 200, 64, 128, 128),
]
TOL = {torch.float32: 2e-3, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def _module(cell, I, H):
    if cell == "lstm":
        return nn.LSTM(I, H)
    if cell == "gru":
        return nn.GRU(I, H)
    return nn.RNN(I, H, nonlinearity=cell.split("_")[1])


def _fused(cell, m):
    w = (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    if cell == "lstm":
        return lambda x: fusedrnn.lstm_layer(x, *w)[0]
    if cell == "gru":
        return lambda x: fusedrnn.gru_layer(x, *w)[0]
    return lambda x: fusedrnn.rnn_layer(x, *w, nonlinearity=cell.split("_")[1])[0]


def _rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1.0)).item()


def _time(fn, reps, device):
    """Median seconds of fn() over reps runs after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(cell, T, B, I, H, dtype, device, reps):
    torch.manual_seed(0)
    m = _module(cell, I, H).to(device=device, dtype=dtype)
    fused = _fused(cell, m)
    x = torch.randn(T, B, I, device=device, dtype=dtype)
    g = torch.randn(T, B, H, device=device, dtype=dtype)
    params = list(m.parameters())

    def grads(fn):
        out = fn(x)
        return (out, *torch.autograd.grad(out, params, g))

    ref = grads(lambda v: m(v)[0])
    got = grads(fused)
    err = max(_rel(a, b) for a, b in zip(got, ref))
    row = dict(cell=cell, T=T, B=B, I=I, H=H, dtype=str(dtype).split(".")[1], max_rel_err=err)
    if not err <= TOL[dtype]:
        row["status"] = "invalid"
        return row

    def train(fn):
        return lambda: torch.autograd.grad(fn(x), params, g)

    with torch.no_grad():
        t_fwd_ref = _time(lambda: m(x), reps, device)
        t_fwd = _time(lambda: fused(x), reps, device)
    t_train_ref = _time(train(lambda v: m(v)[0]), reps, device)
    t_train = _time(train(fused), reps, device)
    row.update(
        status="ok",
        fwd_ms=t_fwd * 1e3,
        fwd_cudnn_ms=t_fwd_ref * 1e3,
        fwd_ratio=t_fwd / t_fwd_ref,
        train_ms=t_train * 1e3,
        train_cudnn_ms=t_train_ref * 1e3,
        train_ratio=t_train / t_train_ref,
    )
    return row


def run_workloads(work, dtype, device, reps, tf32=False):
    """Rows of bench() for each workload, with TF32 set as asked for cuBLAS and cuDNN."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32):
            return [bench(*w, dtype, device, reps) for w in work]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def table(rows, markdown=False):
    """The rows as aligned text lines (or a markdown table)."""
    cols = ["dtype", "cell", "T", "B", "I", "H", "err", "fwd ms", "cuDNN", "ratio",
            "train ms", "cuDNN", "ratio"]  # fmt: skip
    body = []
    for r in rows:
        head = [r["dtype"], r["cell"], r["T"], r["B"], r["I"], r["H"], f"{r['max_rel_err']:.1e}"]
        if r["status"] != "ok":
            body.append(head + ["INVALID (differs from torch.nn; not timed)"] + [""] * 5)
            continue
        body.append(head + [f"{r['fwd_ms']:.3f}", f"{r['fwd_cudnn_ms']:.3f}",
                            f"{r['fwd_ratio']:.2f}", f"{r['train_ms']:.3f}",
                            f"{r['train_cudnn_ms']:.3f}", f"{r['train_ratio']:.2f}"])  # fmt: skip
    cells = [[str(c) for c in row] for row in [cols, *body]]
    if markdown:
        out = ["| " + " | ".join(row) + " |" for row in cells]
        return [out[0], "|" + "---|" * len(cols), *out[1:]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="tiny workloads (a smoke run)")
    p.add_argument("--workloads", default="default", choices=["default", "small-h"])
    p.add_argument("--tf32", default="off", choices=["off", "on"])
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    a = p.parse_args(argv)
    if a.device == "cuda" and not (torch.cuda.is_available() and fusedrnn.build_info()["cuda"]):
        print("cuda_vs_cudnn: needs a GPU and a CUDA build of fusedrnn; nothing timed")
        return 0
    if a.reps < 1:
        p.error(f"--reps must be at least 1, got {a.reps}")
    if a.out and not os.access(a.out.parent if a.out.parent.exists() else Path("."), os.W_OK):
        p.error(f"--out: cannot write in {a.out.parent}")
    dtype = getattr(torch, a.dtype)
    work = SMALL_H_WORKLOADS if a.workloads == "small-h" else WORKLOADS
    if a.small:
        work = [(c, 4, 3, 8, 16) for c, *_ in work[::3]]
    rows = run_workloads(work, dtype, a.device, a.reps, tf32=a.tf32 == "on")
    print("\n".join(table(rows)))
    if a.out:
        meta = dict(device=torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
                    torch=torch.__version__, tf32=a.tf32,
                    build=fusedrnn.build_info().get("cuda_arch_list"))  # fmt: skip
        a.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=a.out.parent, prefix=a.out.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(dict(meta=meta, rows=rows), indent=1))
        os.replace(tmp, a.out)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
