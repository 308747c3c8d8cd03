"""Per-kernel resource report of the CUDA build (nvcc -Xptxas=-v), and a no-spill gate.

Usage: python cuda/ptxas_report.py BUILD_LOG CACHE_DIR

BUILD_LOG is the verbose build output (ninja prints each compile's ptxas lines right after
its "[k/n] Building CUDA object .../X.cu.o" line). The ptxas lines of each compiled .cu file
are saved to CACHE_DIR/X.cu.log, so an incremental build that recompiles nothing still
reports from the last compile of each file. Prints one row per kernel and architecture
(registers, stack, spill stores/loads, shared memory) and exits 1 if any kernel spills or no
kernel was found.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

_OBJ = re.compile(r"Building CUDA object \S*?([\w.-]+\.cu)\.o")
_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def split_log(text: str) -> dict[str, list[str]]:
    """ptxas lines of each .cu file compiled in this log."""
    out: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        m = _OBJ.search(line)
        if m:
            cur = m.group(1)
            out[cur] = []
        elif re.match(r"\s*\[\d+/\d+\]", line):
            cur = None
        elif cur and ("ptxas" in line or "bytes stack frame" in line):
            out[cur].append(line)
    return {k: v for k, v in out.items() if v}


def demangle(names: list[str]) -> list[str]:
    if not shutil.which("c++filt"):
        return names
    res = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    got = res.stdout.splitlines()
    return got if len(got) == len(names) else names


def short(name: str) -> str:
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    name = re.sub(r"fusedrnn::(gpu::|kernels::)?", "", name)
    name = name.replace("c10::", "")
    # pointwise_kernel<&(void body<...>(params)), Args>(...): the body names the kernel
    m = re.match(r"pointwise_kernel<&\(void ([^(]+)\(", name)
    if m:
        return m.group(1)
    return re.sub(r"\(.*\)$", "", name)


def parse(lines: list[str]) -> list[dict]:
    rows: list[dict] = []
    cur: dict | None = None
    for line in lines:
        m = _ENTRY.search(line)
        if m:
            cur = {
                "kernel": m.group(1),
                "arch": m.group(2),
                "regs": 0,
                "stack": 0,
                "spill_st": 0,
                "spill_ld": 0,
                "smem": 0,
            }
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = _USED.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            s = _SMEM.search(line)
            cur["smem"] = int(s.group(1)) if s else 0
    return rows


def main(argv: list[str]) -> int:
    log, cache = Path(argv[1]), Path(argv[2])
    cache.mkdir(parents=True, exist_ok=True)
    text = log.read_text(errors="replace") if log.exists() else ""
    for src, lines in split_log(text).items():
        (cache / f"{src}.log").write_text("\n".join(lines) + "\n")
    rows = []
    for f in sorted(cache.glob("*.cu.log")):
        for r in parse(f.read_text().splitlines()):
            r["file"] = f.name[: -len(".log")]
            rows.append(r)
    if not rows:
        print(f"ptxas report: no ptxas -v output found in {log} or {cache}", file=sys.stderr)
        return 1
    for r, d in zip(rows, demangle([r["kernel"] for r in rows])):
        r["name"] = short(d)
    w = max(len(r["name"]) for r in rows)
    fw = max(len(r["file"]) for r in rows)
    print(
        f"{'file':<{fw}} {'kernel':<{w}} {'arch':<6} {'regs':>4} {'stack':>5} "
        f"{'spill st/ld':>11} {'smem':>5}"
    )
    for r in sorted(rows, key=lambda r: (r["file"], r["name"], r["arch"])):
        print(
            f"{r['file']:<{fw}} {r['name']:<{w}} {r['arch']:<6} {r['regs']:>4} {r['stack']:>5} "
            f"{str(r['spill_st']) + '/' + str(r['spill_ld']):>11} {r['smem']:>5}"
        )
    spills = [r for r in rows if r["spill_st"] or r["spill_ld"]]
    print(
        f"ptxas report: {len(rows)} kernel builds, max {max(r['regs'] for r in rows)} "
        f"registers, {len(spills)} spilling"
    )
    if spills:
        print(
            "FAIL: kernels spill registers: " + ", ".join(r["name"] for r in spills),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
