"""On a GPU: the persistent small-H forward (torch.ops.fusedrnn_cuda.persistent_forward,
cuda/PERSISTENT.md) against the fused layer op and cuDNN (inference, float32, TF32 off,
medians of 20 CUDA-event timings), then a torch.profiler table of one fused forward: where its
per-step time goes. With --graph instead: the fused module's forward captured in a CUDA graph
and replayed, against eager and cuDNN (how much of the eager time is the host's launches).
Results: bench/results/gpu-persistent-<gpu>.md.

    python bench/cuda_persistent.py [--graph]   # needs a CUDA build of fusedrnn and a GPU
"""

import sys

import torch
from cuda_vs_cudnn import SMALL_H_WORKLOADS, _time  # the script's folder is on sys.path
from torch import nn
from torch.profiler import ProfilerActivity, profile

import fusedrnn

if not (fusedrnn.build_info().get("cuda") and torch.cuda.is_available()):
    raise SystemExit("cuda_persistent: needs a CUDA build of fusedrnn and a visible GPU")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"


def t_ms(fn, reps=20):
    """Median milliseconds (CUDA events), cuda_vs_cudnn's timer."""
    return _time(fn, reps, "cuda") * 1e3


def graph_table():
    print(
        "| cell | T | B | H | cuDNN ms | fused eager ms | fused CUDA-graph replay ms | err vs cuDNN |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for cell, T, B, H in [("lstm", 100, 64, 64), ("lstm", 200, 32, 128), ("gru", 100, 64, 128),
                          ("lstm", 30, 32, 64)]:  # fmt: skip
        torch.manual_seed(0)
        m = (nn.LSTM if cell == "lstm" else nn.GRU)(H, H).to(dev)
        f = (fusedrnn.LSTM if cell == "lstm" else fusedrnn.GRU)(H, H).to(dev)
        f.load_state_dict(m.state_dict())
        x = torch.randn(T, B, H, device=dev)
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture stream, as torch advises
                for _ in range(3):
                    f(x)
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                y = f(x)[0]
            g.replay()
            torch.cuda.synchronize()
            err = (y - m(x)[0]).abs().max().item()
            r = [t_ms(lambda: m(x)), t_ms(lambda: f(x)), t_ms(g.replay)]
        print(f"| {cell} | {T} | {B} | {H} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {err:.1e} |")


if "--graph" in sys.argv[1:]:
    graph_table()
    raise SystemExit(0)

print("| cell | T | B | H | cuDNN ms | fused layer ms | persistent ms | persistent err vs cuDNN |")
print("|---|---|---|---|---|---|---|---|")
# cuda_vs_cudnn's small-H LSTM / GRU workloads (the persistent kernel's families), then stock's
PERSIST_WORKLOADS = [w for w in SMALL_H_WORKLOADS if w[0] in ("lstm", "gru")]
for cell, T, B, I, H in [*PERSIST_WORKLOADS, ("lstm", 30, 32, 64, 64)]:
    torch.manual_seed(0)
    m = (nn.LSTM if cell == "lstm" else nn.GRU)(I, H).to(dev)
    f = (fusedrnn.LSTM if cell == "lstm" else fusedrnn.GRU)(I, H).to(dev)
    f.load_state_dict(m.state_dict())
    x = torch.randn(T, B, I, device=dev)
    ws = (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    c0 = torch.zeros(B, H, device=dev) if cell == "lstm" else None
    with torch.no_grad():

        def p():
            return torch.ops.fusedrnn_cuda.persistent_forward(cell, x, None, c0, *ws, False, 0)

        err = (p()[0] - m(x)[0]).abs().max().item()
        r = [t_ms(lambda: m(x)), t_ms(lambda: f(x)), t_ms(p)]
    print(f"| {cell} | {T} | {B} | {H} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {err:.1e} |")

f = fusedrnn.LSTM(64, 64).to(dev)
x = torch.randn(100, 64, 64, device=dev)
with torch.no_grad():
    for _ in range(3):
        f(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        f(x)
        torch.cuda.synchronize()
print(
    prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60)
)
try:
    print(
        prof.key_averages().table(
            sort_by="device_time_total", row_limit=8, max_name_column_width=60
        )
    )
except Exception as e:
    print("no device table:", e)
