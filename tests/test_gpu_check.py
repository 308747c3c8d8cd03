"""`make gpu-check` pieces that run without a GPU: the fail-fast probe (cuda/gpu_check.py) and
the benchmark's workload runner and summary table (bench/cuda_vs_cudnn.py, on the CPU ops)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _probe(tmp_path, smi_script):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if smi_script is not None:
        smi = bindir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + smi_script)
        smi.chmod(0o755)
    env = dict(os.environ, PATH=str(bindir))
    return subprocess.run(
        [sys.executable, str(ROOT / "cuda" / "gpu_check.py"), "--probe"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    "script,why",
    [
        (None, "no nvidia-smi on PATH"),
        ("echo 'NVIDIA-SMI has failed' >&2; exit 9\n", "NVIDIA-SMI has failed"),
        ("exit 0\n", "nvidia-smi lists no GPU"),
    ],
    ids=["no-smi", "smi-fails", "no-gpu-listed"],
)
def test_probe_fails_fast_without_a_gpu(tmp_path, script, why):
    r = _probe(tmp_path, script)
    assert r.returncode == 2
    assert "no CUDA GPU is visible" in r.stderr and why in r.stderr
    assert "make cuda-check" in r.stderr


def test_probe_passes_with_a_gpu_listed(tmp_path):
    r = _probe(tmp_path, "echo 'GPU 0: NVIDIA H200 (UUID: GPU-x)'\n")
    assert r.returncode == 0, r.stderr
    assert "NVIDIA H200" in r.stdout


def _bench():
    spec = importlib.util.spec_from_file_location(
        "cuda_vs_cudnn", ROOT / "bench" / "cuda_vs_cudnn.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_small_h_workloads_and_summary_table():
    bench = _bench()
    assert bench.SMALL_H_WORKLOADS and all(w[4] <= 192 for w in bench.SMALL_H_WORKLOADS)
    rows = bench.run_workloads([("lstm", 3, 2, 4, 8), ("gru", 3, 2, 4, 8)], torch.float32, "cpu", 1)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    text = bench.table(rows)
    assert len(text) == 3 and "ratio" in text[0] and "lstm" in text[1]
    md = bench.table(rows, markdown=True)
    assert md[1].startswith("|---|") and md[2].startswith("| float32 | lstm |")
    assert torch.backends.cuda.matmul.allow_tf32 is False  # restored (default off)


def test_bench_rejects_bad_reps():
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cuda_vs_cudnn.py"), "--device", "cpu", "--reps", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "--reps must be at least 1" in r.stderr
