"""The steps of `make gpu-check` that need Python (see the Makefile).

    python cuda/gpu_check.py --probe     # exit 2 with a clear message where no GPU is visible
    python cuda/gpu_check.py --arch      # TORCH_CUDA_ARCH_LIST of the visible GPUs, e.g. "9.0"
    python cuda/gpu_check.py --run [--results DIR] [--reps N]

--probe needs no torch (it runs before .venv-cuda exists): it asks nvidia-smi. --run checks
that torch sees a GPU and that fusedrnn is a CUDA build, runs tests/test_cuda.py (gradcheck,
cuDNN parity in float32/float16/bfloat16, CUDA-graph capture of packed and projected layers,
torch.compile, a second GPU when present, a grid larger than one wave), then
bench/cuda_vs_cudnn.py's H <= 192 workloads with TF32 off in the three dtypes, and prints one
summary table, saved as DIR/gpu-check-<gpu>.md and .json (written atomically). Exit status 0
only if every test passed (none skipped but those for a second GPU) and every workload validated.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_GPU = (
    "gpu-check: no CUDA GPU is visible on this machine ({why}). It builds, tests and benchmarks "
    "on a GPU; without one, `make cuda-check` builds the CUDA code and "
    "tests/test_cuda_emulation.py runs its kernel bodies on the host."
)


def probe() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        print(NO_GPU.format(why="no nvidia-smi on PATH"), file=sys.stderr)
        return 2
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(NO_GPU.format(why=f"nvidia-smi failed: {e}"), file=sys.stderr)
        return 2
    gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    if out.returncode != 0 or not gpus:
        why = (out.stderr or out.stdout).strip().splitlines()[:1] or ["nvidia-smi lists no GPU"]
        print(NO_GPU.format(why=why[0]), file=sys.stderr)
        return 2
    print("gpu-check: " + "; ".join(gpus))
    return 0


def _torch_gpu():
    import torch

    if not torch.cuda.is_available():
        why = f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no device"
        raise SystemExit(NO_GPU.format(why=why))
    return torch


def arch() -> int:
    torch = _torch_gpu()
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    print(";".join(f"{a}.{b}" for a, b in caps))
    return 0


def _pytest(junit: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}", "tests/test_cuda.py"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    seconds = time.perf_counter() - t0
    counts = dict(passed=0, failed=0, skipped=0, errors=0)
    reasons: set[str] = set()
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            if "failure" in kinds:
                counts["failed"] += 1
            elif "error" in kinds:
                counts["errors"] += 1
            elif "skipped" in kinds:
                counts["skipped"] += 1
                skip = case.find("skipped")
                reasons.add((skip.get("message") or "").strip())
            else:
                counts["passed"] += 1
    return dict(counts, returncode=proc.returncode, seconds=seconds, skip_reasons=sorted(reasons))


def _bench_module():
    path = ROOT / "bench" / "cuda_vs_cudnn.py"
    spec = importlib.util.spec_from_file_location("cuda_vs_cudnn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run(results: Path, reps: int) -> int:
    torch = _torch_gpu()
    import fusedrnn

    info = fusedrnn.build_info()
    if not info.get("cuda"):
        raise SystemExit(
            f"gpu-check: fusedrnn is not a CUDA build ({info}); the build step failed?"
        )
    results.mkdir(parents=True, exist_ok=True)
    if not os.access(results, os.W_OK):
        raise SystemExit(f"gpu-check: cannot write the results folder {results}")
    name = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        tests = _pytest(Path(tmp) / "junit.xml")
    bench = _bench_module()
    t0 = time.perf_counter()
    rows = []
    for dtype in ("float32", "float16", "bfloat16"):
        rows += bench.run_workloads(bench.SMALL_H_WORKLOADS, getattr(torch, dtype), "cuda", reps)
    bench_s = time.perf_counter() - t0

    lines = [
        f"# gpu-check: {name} x{torch.cuda.device_count()}, torch {torch.__version__}, "
        f"fusedrnn {fusedrnn.__version__}, TF32 off",
        "",
        f"tests/test_cuda.py: {tests['passed']} passed, {tests['failed']} failed, "
        f"{tests['errors']} errors, {tests['skipped']} skipped ({tests['seconds']:.0f} s)"
        + "".join(f"\n- skipped: {r}" for r in tests["skip_reasons"]),
        "",
        *bench.table(rows, markdown=True),
        "",
        f"benchmark: {bench_s:.0f} s, {reps} repetitions per timing; ratio = fused / cuDNN "
        "(< 1: fused is faster)",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    _write_atomic(results / f"gpu-check-{slug}.md", text)
    meta = dict(device=name, count=torch.cuda.device_count(), torch=torch.__version__,
                build=info, tests=tests)  # fmt: skip
    _write_atomic(
        results / f"gpu-check-{slug}.json", json.dumps(dict(meta=meta, rows=rows), indent=1)
    )
    # Only the second-GPU tests may skip (one GPU here); any other skip means the CUDA path
    # did not run.
    bad_skips = [r for r in tests["skip_reasons"] if "second GPU" not in r]
    ok = tests["returncode"] == 0 and not bad_skips and tests["passed"] > 0
    ok = ok and all(r["status"] == "ok" for r in rows)
    print(f"gpu-check: {'PASS' if ok else 'FAIL'} (table saved in {results})")
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--probe", action="store_true", help="exit 2 unless a GPU is visible")
    mode.add_argument("--arch", action="store_true", help="print the GPUs' TORCH_CUDA_ARCH_LIST")
    mode.add_argument("--run", action="store_true", help="tests, benchmark, summary table")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args(argv)
    if a.reps < 1:
        p.error(f"--reps must be at least 1, got {a.reps}")
    if a.probe:
        return probe()
    if a.arch:
        return arch()
    return run(a.results, a.reps)


if __name__ == "__main__":
    sys.exit(main())
