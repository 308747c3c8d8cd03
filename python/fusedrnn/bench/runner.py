"""The benchmark run: for each workload and cell, build every implementation from one torch.nn
reference, validate it (outputs, then gradients of a training step), time inference and the
training step, measure GEMM ceilings and peak memory, then print Compare tables and save."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils import benchmark

import fusedrnn
from fusedrnn.experiments._common import (
    check_writable,
    number,
    seed_arg,
    threads_arg,
    write_atomic,
)

from . import impls as impls_mod
from . import measure, report
from .workloads import ALL_CELLS, GROUPS, Workload, flops, gemms, select


def _tag(text: str) -> str:
    """An argparse type: a plain file-name stem (the results are ``<out>/<tag>.json`` etc.),
    so a tag never writes outside --out nor hides its files (a leading dot)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain file-name stem (letters, digits, _ . + -; no / or leading"
            " dot or dash; at most 200 characters)"
        )
    return text


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        metavar="W[,W...]",
        help=f"workloads (name or group) to run: {', '.join(GROUPS)} "
        "(stream = stream-h64, stream-h256 (cell steps), stream-layer-h64, stream-layer-h256 "
        "(T = 1 layer calls); layernorm = ln-stock, ln-sine, "
        "ln-mid, the LayerNorm cells); default all",
    )
    parser.add_argument(
        "--cells",
        default=",".join(ALL_CELLS),
        help="cells to run (default: %(default)s); lnlstm and lngru run on the "
        "layernorm workloads, the others on the rest",
    )
    parser.add_argument(
        "--impls",
        default=",".join(impls_mod.IMPLS),
        help="implementations to run (default: %(default)s); the baseline is "
        "always run: nn, or eager (a Python loop) for the LayerNorm cells, "
        "which torch.nn lacks",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and short timing (smoke runs and tests)"
    )
    parser.add_argument(
        "--threads", type=threads_arg, default=None, help="torch threads (default: torch's own)"
    )
    parser.add_argument("--min-run-time", type=number(float, 0, lo_open=True), default=None,
                        help="seconds per blocked_autorange (default 1.0; 0.01 with --quick)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="where results go (default: %(default)s)")  # fmt: skip
    parser.add_argument("--tag", type=_tag,
                        help="results file name (default: CPU model, kernel table and threads)")  # fmt: skip
    parser.add_argument("--note", default="", help="a note saved with the results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also write a torch.profiler chrome trace (<tag>-trace.json) of "
        "one inference and one training step of each implementation "
        "(use with --only)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement")
    parser.add_argument("--seed", type=seed_arg, default=0)


CEILING = "mm-ceiling"  # the GEMM-only step timed with the implementations (not an impl)


def _row(w: Workload, cell: str, mode: str, impl: str, status: str, reason: str = "") -> dict:
    return {"workload": w.name, "group": w.group, "cell": cell, "mode": mode, "impl": impl,
            "status": status, "reason": reason, "median_s": None, "iqr_s": None, "runs": 0,
            "flops": flops(w, cell, mode == "training"), "gflops": None, "speedup": None,
            "ceiling_s": None, "ceiling_gflops": None, "ceiling_frac": None,
            "max_err": None}  # fmt: skip


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other processes on the cores make timings noisy."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _git_rev() -> str | None:
    """The source tree's commit (``+dirty`` with uncommitted changes), when run from a clone."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _parse_list(text: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in known]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {list(known)}")
    return items


def bench_case(
    w: Workload, cell: str, names: list[str], args, measurements: list, memory: list, seed: int
) -> list[dict]:
    """Validate and time every implementation on one workload and cell (of ``names``, those
    that implement the cell, its baseline first)."""
    torch.manual_seed(seed)
    ref = impls_mod.make_reference(w, cell)
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = impls_mod.make_inputs(w, cell, gen)
    rows: list[dict] = []
    built: dict[str, impls_mod.Impl] = {}
    base = impls_mod.baseline(cell)
    for name in _case_names(names, cell):
        try:
            built[name] = impls_mod.build(name, w, cell, ref, inputs)
        except impls_mod.Skip as e:
            rows += [_row(w, cell, m, name, "skipped", str(e)) for m in report.MODES]

    # Reference results: the baseline's (torch.nn's) outputs and gradients of a training step.
    base_impl = built[base]
    ref_out = [t.clone() for t in measure.infer_fn(base_impl)()]
    measure.train_fn(base_impl, inputs.grad_out)()
    ref_grads = [g.clone() for g in measure.grads(base_impl)]

    steps: dict[tuple[str, str], tuple] = {}  # (impl, mode) -> (fn, first call seconds)
    for name, impl in built.items():
        infer, train = measure.infer_fn(impl), measure.train_fn(impl, inputs.grad_out)
        try:
            t_inf = time.perf_counter()
            out = infer()
            t_inf = time.perf_counter() - t_inf
            err_inf = measure.worst(zip(out, ref_out)) if len(out) == len(ref_out) else float("inf")
            t_tr = measure.timed_once(train)
            err_tr = measure.worst(zip(measure.grads(impl), ref_grads))
        except Exception as e:  # a broken implementation is reported, not fatal
            rows += [
                _row(w, cell, m, name, "error", f"{type(e).__name__}: {e}") for m in report.MODES
            ]
            continue
        for mode, err, fn, first in (
            ("inference", err_inf, infer, t_inf),
            ("training", err_tr, train, t_tr),
        ):
            if err > measure.tolerance(cell):
                r = _row(w, cell, mode, name, "invalid",
                         f"{mode} differs from {_BASE_NAME[base]} by {err:.2e} (relative)")  # fmt: skip
                r["max_err"] = err
                rows.append(r)
            else:
                steps[(name, mode)] = (fn, first, err)

    for mode in report.MODES:
        f = flops(w, cell, mode == "training")
        todo = {name: steps[(name, mode)][:2] for name in built if (name, mode) in steps}
        if todo:  # the GEMM ceiling runs in the same rounds as the implementations
            ceiling = measure.gemm_replay(gemms(w, cell, mode == "training"))
            todo[CEILING] = (ceiling, measure.timed_once(ceiling))
        timed = measure.measure_interleaved(
            todo,
            label=f"{mode} (median time)",
            sub_label=f"{w.name} {cell}",
            threads=torch.get_num_threads(),
            min_run_time=args.min_run_time,
        )
        measurements += list(timed.values())
        ceil_s = timed.pop(CEILING).median if todo else None
        for name, m in timed.items():
            r = _row(w, cell, mode, name, "ok")
            r.update(median_s=m.median, iqr_s=m.iqr, runs=len(m.times), gflops=f / m.median / 1e9,
                     ceiling_s=ceil_s, ceiling_gflops=f / ceil_s / 1e9,
                     ceiling_frac=ceil_s / m.median, max_err=steps[(name, mode)][2])  # fmt: skip
            rows.append(r)
        base_row = next(
            (r for r in rows if (r["impl"], r["mode"], r["status"]) == (base, mode, "ok")), None
        )
        for r in rows:
            if r["mode"] == mode and r["status"] == "ok" and base_row:
                r["speedup"] = base_row["median_s"] / r["median_s"]

    if not args.no_memory:
        base_bytes = None
        for name, impl in built.items():
            if (name, "training") not in steps:
                continue
            peak = measure.peak_step_bytes(impl, steps[(name, "training")][0])
            base_bytes = peak if name == base else base_bytes
            memory.append({"workload": w.name, "cell": cell, "impl": name, "peak_bytes": peak,
                           "baseline": base, "nn_bytes": base_bytes if base == "nn" else None,
                           "base_bytes": base_bytes})  # fmt: skip
    return rows


_BASE_NAME = {"nn": "torch.nn", "eager": "the eager baseline"}


def _case_names(names: list[str], cell: str) -> list[str]:
    """The implementations of ``names`` that implement ``cell``, its baseline first."""
    base = impls_mod.baseline(cell)
    return [base] + [n for n in names if n != base and impls_mod.applies(n, cell)]


def _progress(rows: list[dict]) -> str:
    parts = []
    base = impls_mod.baseline(rows[0]["cell"]) if rows else "nn"
    for mode in report.MODES:
        got = [
            f"{r['impl']} {report._fmt_time(r['median_s'])}"
            + (f" ({r['speedup']:.2f}x)" if r["impl"] != base and r["speedup"] else "")
            for r in rows
            if r["mode"] == mode and r["status"] == "ok"
        ]
        bad = [
            f"{r['impl']} {r['status'].upper()}"
            for r in rows
            if r["mode"] == mode and r["status"] in ("invalid", "error")
        ]
        parts.append(f"  {mode:9s}: " + ", ".join(got + bad))
    return "\n".join(parts)


def write_trace(cases, path: Path, seed: int) -> Path:
    """A chrome trace of one inference and one training step per implementation (each after
    a warm-up step), each under a ``record_function`` label ``<workload>/<cell>/<impl>/<mode>``;
    the fused ops appear inside as ``fusedrnn::lstm_layer`` and friends."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with (
        measure.quiet_stderr(),
        profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof,
    ):
        for w, cell, names in cases:
            torch.manual_seed(seed)
            ref = impls_mod.make_reference(w, cell)
            inputs = impls_mod.make_inputs(w, cell, torch.Generator().manual_seed(seed + 1))
            for name in _case_names(names, cell):
                try:
                    impl = impls_mod.build(name, w, cell, ref, inputs)
                except impls_mod.Skip:
                    continue
                steps = {
                    "inference": measure.infer_fn(impl),
                    "training": measure.train_fn(impl, inputs.grad_out),
                }
                for mode, fn in steps.items():
                    fn()  # warm-up outside the label
                    with record_function(f"{w.name}/{cell}/{name}/{mode}"):
                        fn()
    write_atomic(path, lambda tmp: prof.export_chrome_trace(tmp))
    summary = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    write_atomic(path.with_suffix(".txt"), summary + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore", message=".*TF32.*")
    if args.min_run_time is None:
        args.min_run_time = 0.01 if args.quick else 1.0
    try:
        workloads = select(args.only, args.quick)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    cells = _parse_list(args.cells, ALL_CELLS, "cells")
    names = _parse_list(args.impls, impls_mod.IMPLS, "impls")
    cases = [(w, c) for w in workloads for c in cells if c in w.cells]
    if not cases:
        raise SystemExit(
            f"no workload runs the cells {cells}: lnlstm and lngru run on the layernorm "
            f"workloads (--only layernorm), the other cells on the rest"
        )
    check_writable(args.out, "fusedrnn bench")  # before the benchmark, not after it
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    tag = args.tag or report.machine_tag(threads, capability) + ("-quick" if args.quick else "")
    started = time.perf_counter()
    load_start = _loadavg()
    print(
        f"fusedrnn bench: {len(workloads)} workloads, {len(cases)} cases, impls {names}, "
        f"{threads} threads, min_run_time {args.min_run_time}s",
        flush=True,
    )

    if load_start and load_start[0] > 0.5:
        print(
            f"warning: load average {load_start[0]} before starting: other processes are "
            "using the CPUs, timings (threaded torch.nn above all) will be noisy"
        )
    sgemm_peak = measure.sgemm_gflops(
        256 if args.quick else 2048, threads, min(0.5, args.min_run_time)
    )
    print(f"sgemm {256 if args.quick else 2048}^3: {sgemm_peak:.1f} GFLOP/s", flush=True)

    results: list[dict] = []
    memory: list[dict] = []
    measurements: list = []
    for w, cell in cases:
        t0 = time.perf_counter()
        rows = bench_case(w, cell, names, args, measurements, memory, args.seed)
        results += rows
        print(
            f"{w.name} {cell} [{w.describe()}] ({time.perf_counter() - t0:.1f} s)\n"
            + _progress(rows),
            flush=True,
        )

    print()
    compare = benchmark.Compare(measurements)
    compare.trim_significant_figures()
    compare.print()

    meta = {
        "tag": tag,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "fusedrnn bench "
        + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
        "cpu": report.cpu_model(),
        "cpu_capability": capability,
        "threads": threads,
        "torch": torch.__version__,
        "fusedrnn": fusedrnn.__version__,
        "git": _git_rev(),
        "numba": _version("numba"),
        "quick": args.quick,
        "min_run_time": args.min_run_time,
        "sgemm_peak_gflops": sgemm_peak,
        "bound_gflops": report.bound_rate(results, sgemm_peak),
        "note": args.note,
        "workloads": {w.name: w.describe() for w in workloads},
        "elapsed_s": None,
        "loadavg_start": load_start,
        "loadavg_end": None,
    }
    targets = report.target_checks(results, memory, meta["bound_gflops"])
    if args.profile:
        trace = write_trace(
            [(w, c, names) for w, c in cases], args.out / f"{tag}-trace.json", args.seed
        )
        print(f"profile: {trace} (summary {trace.with_suffix('.txt')})")
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = _loadavg()
    paths = report.save(args.out, tag, meta, results, memory, targets)
    bad = [r for r in results if r["status"] in ("invalid", "error")]
    for r in bad:
        print(
            f"{r['status'].upper()}: {r['workload']} {r['cell']} {r['impl']} {r['mode']}: "
            f"{r['reason']}"
        )
    print(f"wrote {', '.join(str(p) for p in paths)} in {meta['elapsed_s']} s")
    return 1 if bad else 0
