"""On a GPU: the fused LayerNorm LSTM / GRU (cuda/ln_kernels.cuh) against the eager Python
loop (fusedrnn.layernorm_eager) and the TorchScript layers in the style of custom_lstms.py
(fusedrnn.bench.script_layernorm), at the shapes of the CPU bench's layernorm group (ln-stock,
ln-sine, ln-mid). float32, TF32 off; inference (no_grad forward) and a training step (forward,
backward of a fixed cotangent); medians of CUDA-event timings after warm-ups. All three
implementations carry the same weights, and their outputs are compared before timing.

    python bench/cuda_layernorm.py [--reps N] [--out FILE]   # a CUDA build and a GPU

Writes a markdown table to FILE (default bench/results/gpu-layernorm-<gpu>.md), atomically.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch
from cuda_vs_cudnn import _time  # the script's folder is on sys.path

import fusedrnn
from fusedrnn.bench import script_layernorm
from fusedrnn.experiments._common import write_atomic
from fusedrnn.layernorm_eager import eager_twin

# name, B, T, I, H, layers: bench/workloads (the CPU bench's layernorm group)
SHAPES = [("ln-stock", 32, 30, 1, 64, 2), ("ln-sine", 784, 20, 1, 32, 1),
          ("ln-mid", 64, 100, 128, 256, 1)]  # fmt: skip
CELLS = {
    "lnlstm": (fusedrnn.LayerNormLSTM, script_layernorm.ScriptLayerNormLSTM),
    "lngru": (fusedrnn.LayerNormGRU, script_layernorm.ScriptLayerNormGRU),
}


def _impls(cell, I, H, layers):
    fcls, scls = CELLS[cell]
    torch.manual_seed(0)
    fused = fcls(I, H, num_layers=layers).cuda()
    with torch.no_grad():  # gains away from 1, so a LayerNorm weight mix-up would show
        for n, p in fused.named_parameters():
            if n.startswith("layernorm_"):
                p.add_(0.3 * torch.randn_like(p))
    return {"fused": fused, "eager": eager_twin(fused), "torchscript": scls(fused)}


def _row(name, cell, B, T, I, H, layers, reps):
    mods = _impls(cell, I, H, layers)
    x = torch.randn(T, B, I, device="cuda")
    cot = torch.randn(T, B, H, device="cuda")
    with torch.no_grad():
        outs = {k: m(x)[0] for k, m in mods.items()}
    err = max((outs[k] - outs["fused"]).abs().max().item() for k in ("eager", "torchscript"))
    if not err < 1e-3:  # float32 LayerNorm of a 1-wide input: ~1e-4 apart; a bug: ~1e-1
        raise SystemExit(f"cuda_layernorm: {name} {cell}: implementations differ by {err:.3g}")

    def infer(m):
        with torch.no_grad():
            m(x)

    def train(m):
        m.zero_grad(set_to_none=True)
        m(x)[0].backward(cot)

    ms = {}
    for k, m in mods.items():
        ms[k] = (_time(lambda m=m: infer(m), reps, "cuda") * 1e3,
                 _time(lambda m=m: train(m), reps, "cuda") * 1e3)  # fmt: skip
    f, e, s = ms["fused"], ms["eager"], ms["torchscript"]
    return (f"| {name} | {cell} | {T} | {B} | {H} | {layers} | {err:.1e} "
            f"| {f[0]:.3f} | {e[0]:.3f} | {s[0]:.3f} | {s[0] / f[0]:.2f}x "
            f"| {f[1]:.3f} | {e[1]:.3f} | {s[1]:.3f} | {s[1] / f[1]:.2f}x |")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.reps < 1:
        p.error(f"--reps must be at least 1, got {a.reps}")
    if not (fusedrnn.build_info().get("cuda") and torch.cuda.is_available()):
        raise SystemExit("cuda_layernorm: needs a CUDA build of fusedrnn and a visible GPU")
    gpu = torch.cuda.get_device_name(0)
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    out = a.out or Path(__file__).resolve().parent / "results" / f"gpu-layernorm-{slug}.md"
    if not os.access(out.parent, os.W_OK):
        p.error(f"--out: cannot write in {out.parent}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    lines = [
        f"# LayerNorm LSTM / GRU on {gpu} (torch {torch.__version__}, float32, TF32 off; "
        f"medians of {a.reps} CUDA-event timings; bench/cuda_layernorm.py)",
        "",
        "x = TorchScript time / fused time; err = largest output difference from the fused.",
        "",
        "| shape | cell | T | B | H | layers | err | infer fused ms | eager | TorchScript | x "
        "| train fused ms | eager | TorchScript | x |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, B, T, I, H, layers in SHAPES:
        for cell in CELLS:
            lines.append(_row(name, cell, B, T, I, H, layers, a.reps))
            print(lines[-1], flush=True)
    write_atomic(out, "\n".join(lines) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
