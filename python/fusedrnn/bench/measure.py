"""Validation, timing, the GEMM ceiling and peak memory.

Timing: ``torch.utils.benchmark.Timer(...).blocked_autorange`` with ``num_threads`` set to the
run's thread count (``Timer`` defaults to one thread); we report its median and IQR.

Peak memory of a training step: with every ``.grad`` cleared, one step (forward + backward) runs
under ``torch.profiler.profile(profile_memory=True)``, which records every allocation and free
of the c10 CPU allocator (all tensors: activations saved for backward, workspaces, gradients,
temporaries). The peak of the running sum of those events is the most memory the step held above
what existed before it (parameters and inputs). Memory a library allocates behind the allocator's
back (``std::vector`` inside a kernel, oneDNN's internal scratchpad when not handed an ATen
tensor, NumPy arrays) is invisible to it; the fused kernels and the baselines here allocate
their buffers as tensors.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark

from .impls import Impl
from .workloads import Gemm

TOLERANCE = 1e-3  # float32: max |a - b| / max(1, max |b|) per tensor
# The LayerNorm LSTM at the mid shape (T=100, H=256) is ill-conditioned in float32: against a
# float64 run, the eager loop's own output is off by 5.5e-4 and the fused one's by 1.1e-3, so
# two correct float32 runs differ by ~1e-3 (float64: 1.3e-12, tests/test_layernorm.py).
TOLERANCE_LAYERNORM = 3e-3


def tolerance(cell: str) -> float:
    """The largest relative difference from the baseline that still validates ``cell``."""
    return TOLERANCE_LAYERNORM if cell.startswith("ln") else TOLERANCE


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def infer_fn(impl: Impl) -> Callable[[], tuple]:
    def step():
        with torch.no_grad():
            return impl.call()

    return step


def train_fn(impl: Impl, grad_out: torch.Tensor) -> Callable[[], None]:
    """Zero the gradients (set to None, as ``zero_grad()`` does), forward, backward."""
    params = list(impl.module.parameters())

    def step():
        for p in params:
            p.grad = None
        out = impl.call()
        torch.autograd.backward(out[0], grad_out)

    return step


def grads(impl: Impl) -> list[torch.Tensor]:
    return [p.grad for p in impl.module.parameters()]


def worst(pairs) -> float:
    return max((rel_err(a, b) for a, b in pairs), default=0.0)


def timed_once(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_interleaved(fns: dict[str, tuple[Callable, float]], *, label: str, sub_label: str,
                        threads: int, min_run_time: float, rounds: int = 3
                        ) -> dict[str, benchmark.Measurement]:  # fmt: skip
    """Time several implementations of one step in ``rounds`` interleaved rounds (A B C A B C
    ...), so that a change in machine load affects all of them alike, and merge each one's
    blocks into one ``Measurement``.

    ``fns`` maps a name to ``(step, seconds its first call took)``. Each step is warmed up
    (more calls for fast ones: JIT executors specialise over their first calls). Round 1 is
    ``blocked_autorange``, which picks the block size (calls per timed block); later rounds
    time blocks of that size, each round after one untimed call of a fast step (the first call
    after another implementation ran pays for cold caches and sleeping worker threads: up to
    tens of ms for oneDNN's LSTM on a busy machine). Each step gets ``min_run_time`` in all, or up to 4x that for slow
    steps so that ~5 runs enter its median."""
    state = {}
    for name, (fn, first) in fns.items():
        last = first
        for _ in range(1 if first > 0.05 else 3):
            last = timed_once(fn)
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, label=label, sub_label=sub_label,
                                description=name, num_threads=threads)  # fmt: skip
        budget = max(min_run_time, min(5 * last, 4 * min_run_time)) / rounds
        state[name] = {"fn": fn, "timer": timer, "budget": budget, "number": None, "parts": [],
                       "fast": last < 0.05}  # fmt: skip
    for _ in range(rounds):
        for st in state.values():
            timer = st["timer"]
            if st["fast"]:
                st["fn"]()  # re-warm: the previous step may have left caches/threads cold
            if st["number"] is None:
                m = timer.blocked_autorange(min_run_time=st["budget"])
                st["number"] = m.number_per_run
                st["parts"].append(m)
                continue
            times, spent = [], 0.0
            with benchmark.utils.common.set_torch_threads(threads):
                while spent < st["budget"]:
                    times.append(timer._timeit(st["number"]))
                    spent += times[-1]
            st["parts"].append(benchmark.Measurement(st["number"], times, timer._task_spec))
    return {name: benchmark.Measurement.merge(st["parts"])[0] for name, st in state.items()}


def _operands(g: Gemm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.randn(g.k, g.m).t() if g.ta else torch.randn(g.m, g.k)
    b = torch.randn(g.n, g.k).t() if g.tb else torch.randn(g.k, g.n)
    return a, b, torch.empty(g.m, g.n)


def gemm_replay(gemms: list[Gemm]) -> Callable[[], None]:
    """A step made of nothing but the workload's GEMMs: each ``torch.mm`` with the real shapes,
    operands in the real layout (transposed views where the kernel multiplies by a transpose)
    and preallocated outputs, ``count`` times, back to back. Timed alongside the
    implementations (same rounds, same machine state), its time is the GEMM ceiling: what a
    step would take if everything but the GEMMs were free."""
    ops = [(*_operands(g), g.count) for g in gemms]
    mm = torch.mm

    def step():
        for a, b, c, n in ops:
            for _ in range(n):
                mm(a, b, out=c)

    return step


def sgemm_gflops(n: int, threads: int, min_run_time: float) -> float:
    """A square ``n^3`` ``torch.mm``'s throughput: the machine's practical GEMM peak."""
    a, b, c = _operands(Gemm(n, n, n))
    timer = benchmark.Timer(
        stmt="torch.mm(a, b, out=c)", globals={"a": a, "b": b, "c": c}, num_threads=threads
    )
    return 2 * n**3 / timer.blocked_autorange(min_run_time=min_run_time).median / 1e9


@contextlib.contextmanager
def quiet_stderr():
    """Silence the profiler's native start/stop log lines (written to fd 2)."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_step_bytes(impl: Impl, step: Callable[[], None]) -> int:
    """Peak bytes held above the starting point during one training step (see module doc)."""
    for p in impl.module.parameters():
        p.grad = None
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak
