"""Results on disk: ``<tag>.json`` (everything), ``<tag>.md`` (tables), ``<tag>-speedup.png``."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

from fusedrnn.experiments._common import write_atomic

from .impls import IMPLS, baseline

MODES = ("inference", "training")

# The performance targets (issue 11): (mode, workload group, cell or None for all) -> minimum
# fused speedup over torch.nn, at every thread count the bench runs with. A fifth entry names
# another implementation to beat (time of that one / fused time).
TARGETS = [
    ("training", "stock", "lstm", 3.0),
    ("training", "sine", "lstm", 3.0),
    ("training", "stock", "gru", 4.0),
    ("training", "sine", "gru", 4.0),
    ("training", "stock", "rnn", 2.0),
    ("training", "sine", "rnn", 2.0),
    ("training", "mid", None, 1.5),
    ("training", "large", None, 1.0),
    ("training", "stream", None, 2.0),
    ("inference", "stock", "lstm", 2.5),
    ("inference", "sine", "lstm", 2.5),
    ("inference", "stock", "gru", 3.0),
    ("inference", "sine", "gru", 3.0),
    ("inference", "stock", "rnn", 3.0),
    ("inference", "sine", "rnn", 3.0),
    ("inference", "stream", None, 3.0),
    # issue 15: the fused LayerNorm LSTM/GRU against a TorchScript LayerNorm cell loop
    ("training", "layernorm", None, 5.0, "torchscript"),
    ("inference", "layernorm", None, 5.0, "torchscript"),
]
LARGE_CEILING_TARGET = 0.90


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or platform.machine()


def machine_tag(threads: int, capability: str) -> str:
    """A file-name tag for this machine: CPU model, kernel table and thread count.

    The kernel table is in the name because one model name covers machines that differ in it
    (the project's "AMD EPYC" comes with AVX-512 and with AVX2 only): without it, a run on one
    would overwrite the other's results."""
    model = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@", " ", cpu_model())
    slug = re.sub(r"[^a-z0-9.]+", "-", model.lower()).strip("-")
    isa = re.sub(r"[^a-z0-9]+", "", capability.lower())
    return "-".join(p for p in (slug or "cpu", isa, f"{threads}t") if p)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _fmt_bytes(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.3g} MiB"
    return f"{n / 2**10:.3g} KiB"


def _rows(results, mode):
    keyed = {}
    for r in results:
        if r["mode"] == mode:
            keyed.setdefault((r["workload"], r["cell"]), {})[r["impl"]] = r
    return keyed


def _bounds(base_s, fused, peak_gflops):
    """The largest ratio over a baseline taking ``base_s`` that ``fused`` (a result row) could
    reach if all its GEMM FLOPs ran at the square-sgemm rate and nothing else took time, and the
    ratio it would reach at its GEMM ceiling (not strict: per-call overhead is in the ceiling)."""
    if base_s is None:
        return None, None
    bound = None
    if fused.get("flops") and peak_gflops:
        bound = base_s / (fused["flops"] / (peak_gflops * 1e9))
    ceiling_bound = base_s / fused["ceiling_s"] if fused.get("ceiling_s") else None
    return bound, ceiling_bound


def bound_rate(results, sgemm_peak_gflops) -> float | None:
    """The GEMM rate the targets' bounds assume: the square sgemm's, or the best rate any
    implementation or GEMM ceiling of this run reached when that is higher (a 2048^3 sgemm
    timed once at the start can read low on a loaded machine; a bound below a rate the run
    itself reached would not be one)."""
    seen = [r.get(k) or 0.0 for r in results if r["status"] == "ok"
            for k in ("gflops", "ceiling_gflops")]  # fmt: skip
    best = max([sgemm_peak_gflops or 0.0, *seen])
    return best or None


def target_checks(results, memory, sgemm_peak_gflops) -> list[dict]:
    """Each target with the measured fused ratio (one entry per workload and cell), and for the
    speed targets the bounds of ``_bounds`` at this run's ``sgemm_peak_gflops``."""
    out = []
    ok_rows = {
        (r["workload"], r["cell"], r["mode"], r["impl"]): r for r in results if r["status"] == "ok"
    }
    for mode, group, cell, need, *versus in TARGETS:
        for r in results:
            if (r["mode"], r["group"], r["impl"]) != (mode, group, "fused"):
                continue
            if cell not in (None, r["cell"]) or r["status"] != "ok":
                continue
            other_impl = versus[0] if versus else baseline(r["cell"])
            other = ok_rows.get((r["workload"], r["cell"], mode, other_impl))
            if versus:  # time of that implementation / fused time, when it ran
                ratio = other["median_s"] / r["median_s"] if other else None
                what = f"{mode} {r['workload']} {r['cell']}: fused >= {need:g}x {versus[0]}"
            else:
                ratio = r["speedup"]
                what = f"{mode} {r['workload']} {r['cell']}: speedup >= {need:g}x"
            ok = ratio is not None and ratio >= need
            bound, ceiling_bound = _bounds(
                other["median_s"] if other else None, r, sgemm_peak_gflops
            )
            out.append({"target": what, "need": need, "measured": ratio, "met": ok,
                        "bound": bound, "ceiling_bound": ceiling_bound})  # fmt: skip
            if group == "large" and mode == "training":
                frac = r["ceiling_frac"]
                out.append({"target": f"{mode} large {r['cell']}: >= "
                            f"{LARGE_CEILING_TARGET:.0%} of GEMM ceiling",
                            "need": LARGE_CEILING_TARGET, "measured": frac,
                            "met": frac is not None and frac >= LARGE_CEILING_TARGET,
                            "bound": None, "ceiling_bound": None})  # fmt: skip
    for m in memory:
        if m["impl"] == "fused" and m.get("nn_bytes"):
            ratio = m["peak_bytes"] / m["nn_bytes"]
            out.append({"target": f"memory {m['workload']} {m['cell']}: fused peak <= torch.nn",
                        "need": 1.0, "measured": ratio, "met": ratio <= 1.0,
                        "bound": None, "ceiling_bound": None})  # fmt: skip
    return out


def _met(t: dict) -> str:
    """yes / NO, or ``NO (above bound)`` for a missed target above the sgemm-peak bound: no
    fused kernel could meet it on this machine against these baseline times."""
    if t["met"]:
        return "yes"
    bound, need = t.get("bound"), t.get("need")
    return "NO (above bound)" if bound is not None and need is not None and need > bound else "NO"


def _mode_table(results: list[dict], mode: str, title: str) -> list[str]:
    """One Markdown table: a row per (workload, cell), a column per implementation that ran,
    speedups over the rows' baseline (torch.nn; eager for the LayerNorm cells)."""
    keyed = _rows(results, mode)
    if not keyed:
        return []
    impls = [i for i in IMPLS if any(r["impl"] == i and r["status"] == "ok" for r in results)]
    base = baseline(next(iter(keyed))[1])
    lines = ["", f"## {title}", ""]
    head = ["workload", "cell"] + impls
    extra = "fused vs torchscript" if base == "eager" else None
    head += ([extra] if extra else []) + [
        f"GFLOP/s {base} / fused",
        "ceiling GFLOP/s",
        "fused/ceiling",
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for (wl, cell), by in keyed.items():
        cells = [wl, cell]
        for i in impls:
            r = by.get(i)
            if r is None or r["status"] != "ok":
                cells.append("-" if r is None or r["status"] == "skipped" else r["status"])
            elif i == base:
                cells.append(_fmt_time(r["median_s"]))
            else:
                cells.append(f"{_fmt_time(r['median_s'])} ({r['speedup']:.2f}x)")
        f, n = by.get("fused"), by.get(base)
        ok = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
        if extra:
            ts = by.get("torchscript")
            cells.append(f"{ts['median_s'] / f['median_s']:.2f}x" if ok(f) and ok(ts) else "-")
        if ok(f):
            nn_gf = f"{n['gflops']:.3g}" if ok(n) else "-"
            cells += [
                f"{nn_gf} / {f['gflops']:.3g}",
                f"{f['ceiling_gflops']:.3g}",
                f"{100 * f['ceiling_frac']:.0f}%",
            ]
        else:
            cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(meta: dict, results: list[dict], memory: list[dict], targets: list[dict]) -> str:
    impls = [i for i in IMPLS if any(r["impl"] == i and r["status"] == "ok" for r in results)]
    plain = [r for r in results if baseline(r["cell"]) == "nn"]
    ln = [r for r in results if baseline(r["cell"]) == "eager"]
    lines = [
        f"# fusedrnn benchmark: {meta['tag']}",
        "",
        f"- machine: {meta['cpu']} ({meta['cpu_capability']}), {meta['threads']} torch threads",
        f"- torch {meta['torch']}, fusedrnn {meta['fusedrnn']} (git {meta.get('git') or '?'}), "
        f"numba {meta.get('numba', '-')}",
        f"- date: {meta['date']}; command: `{meta['command']}`",
        f"- square 2048^3 sgemm (torch.mm): {meta['sgemm_peak_gflops']:.1f} GFLOP/s"
        + (
            f"; targets' bounds at {meta['bound_gflops']:.1f} GFLOP/s (bench/README.md)"
            if meta.get("bound_gflops")
            else ""
        ),  # fmt: skip
        f"- medians of `torch.utils.benchmark.Timer` blocks, {meta['min_run_time']} s per "
        "implementation in 3 interleaved rounds; speedup = torch.nn time / time; GFLOP/s counts "
        "GEMM FLOPs only; ceiling = the same GEMMs timed alone with torch.mm; fused/ceiling = "
        "ceiling time / fused time (see bench/README.md)",
    ]
    if ln:
        lines.append(
            "- LayerNorm cells (lnlstm, lngru; torch.nn has none): speedup = eager time / time, "
            "eager = a Python loop over time steps of torch ops (fusedrnn.layernorm_eager); "
            "fused vs torchscript = TorchScript LayerNorm layers' time / fused time"
        )
    if meta.get("loadavg_start"):
        lines.append(
            f"- load average (1/5/15 min) at start {meta['loadavg_start']}, at end "
            f"{meta.get('loadavg_end')}; {meta['threads']} threads on {os.cpu_count()} CPUs; "
            f"run took {meta.get('elapsed_s')} s"
        )
    if meta.get("note"):
        lines.append(f"- note: {meta['note']}")
    titles = {
        "inference": "Inference forward (no_grad)",
        "training": "Training step (zero grads, forward, backward)",
    }
    for mode in MODES:
        lines += _mode_table(plain, mode, titles[mode])
    for mode in MODES:
        lines += _mode_table(
            ln, mode, f"LayerNorm cells: {titles[mode][0].lower()}{titles[mode][1:]}"
        )
    if memory:
        lines += [
            "",
            "## Peak memory of a training step (c10 CPU allocator, via torch.profiler)",
            "",
            "| workload | cell | " + " | ".join(i for i in impls) + " | fused / baseline |",
            "|---|---|" + "---|" * (len(impls) + 1),
        ]
        by = {}
        for m in memory:
            by.setdefault((m["workload"], m["cell"]), {})[m["impl"]] = m["peak_bytes"]
        for (wl, cell), d in by.items():
            cells = [wl, cell] + [_fmt_bytes(d[i]) if i in d else "-" for i in impls]
            b = baseline(cell)
            ratio = d["fused"] / d[b] if d.get(b) and "fused" in d else None
            cells.append(f"{ratio:.2f}" if ratio is not None else "-")
            lines.append("| " + " | ".join(cells) + " |")
    if targets:
        lines += [
            "",
            "## Targets (fused vs torch.nn unless named, this run)",
            "",
            "Bound at peak rate = baseline time / (fused GEMM FLOPs / GEMM rate): the ratio if "
            "every GEMM ran at the header's rate for bounds (the square sgemm's, or the best rate "
            "a row of this run reached if higher) and nothing else took time, strict as long as "
            "that is the machine's best GEMM rate (a target above it is `NO (above bound)`); "
            "bound at GEMM ceiling = baseline time / ceiling time, not "
            "strict: a fused op can beat torch.mm timed per GEMM, since small GEMMs pay a call "
            "each.",
            "",
            "| target | measured | bound at peak rate | bound at GEMM ceiling | met |",
            "|---|---|---|---|---|",
        ]
        ratio = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        for t in targets:
            v = t["measured"]
            shown = f"{100 * v:.0f}%" if "ceiling" in t["target"] and v is not None else ratio(v)
            lines.append(
                f"| {t['target']} | {shown} | {ratio(t.get('bound'))} | "
                f"{ratio(t.get('ceiling_bound'))} | {_met(t)} |"
            )
    notes = sorted({f"{r['impl']}: {r['reason']}" for r in results if r["status"] != "ok"})
    if notes:
        lines += ["", "## Not timed", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, title: str) -> bool:
    """Bar chart of speedups over torch.nn (log scale), one panel per mode. False when
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    others = [i for i in IMPLS if i != "nn"]
    fig, axes = plt.subplots(2, 1, figsize=(14, 9), squeeze=False)
    for ax, mode in zip(axes[:, 0], MODES):
        keyed = _rows(results, mode)
        labels = [f"{wl} {cell}" for wl, cell in keyed]
        width = 0.8 / len(others)
        for j, impl in enumerate(others):
            xs, ys = [], []
            for k, by in enumerate(keyed.values()):
                r = by.get(impl)
                if r and r["status"] == "ok" and r["speedup"]:
                    xs.append(k + (j - (len(others) - 1) / 2) * width)
                    ys.append(r["speedup"])
            if xs:
                ax.bar(xs, ys, width=width, label=impl)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
        ax.set_ylabel("speedup vs torch.nn (LayerNorm: vs eager)")
        ax.set_title(f"{title}: {mode}")
        ax.legend(fontsize=7, ncol=len(others))
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True


def save(out_dir: Path, tag: str, meta: dict, results, memory, targets) -> list[Path]:
    paths = [out_dir / f"{tag}.json", out_dir / f"{tag}.md"]
    payload = {"meta": meta, "results": results, "memory": memory, "targets": targets}
    # atomic (temp file + rename): an interrupted save never leaves a truncated result
    write_atomic(paths[0], json.dumps(payload, indent=1) + "\n")
    write_atomic(paths[1], markdown(meta, results, memory, targets))
    png = out_dir / f"{tag}-speedup.png"
    if plot(results, png, tag):
        paths.append(png)
    return paths
