#!/usr/bin/env bash
# Builds fusedrnn's wheel as a user would (a fresh venv with torch and the build requirements,
# pip wheel --no-build-isolation), installs it without extras in that venv and smoke-tests it
# from outside the source tree: import, one op against torch.nn, the wheel's torch pin, no
# extra pulled in, `fusedrnn --help` / `--version`, the one-line message of a command whose
# extra is missing. Also checks that an isolated `pip install .` stops at once with the command
# to use, and that building left nothing in the source tree.
#   bash scripts/wheel_smoke.sh     (make wheel-check; CI runs it after make test)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM
start=$SECONDS
step() { echo "wheel-check [$((SECONDS - start)) s]: $*"; }

step "fresh venv with $TORCH_SPEC and the build requirements"
$PYTHON -m venv "$WORK/venv"
PY=$WORK/venv/bin/python
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "$TORCH_SPEC" "scikit-build-core>=1.0" "pybind11>=2.12" ninja "cmake>=3.25"

step "an isolated build stops at once, naming the command to use"
t0=$SECONDS
if $PY -m pip install --no-deps "$SRC" > "$WORK/isolated.log" 2>&1; then
  echo "wheel-check: an isolated pip install succeeded; it should stop" >&2; exit 1
fi
grep -q "pip install --no-build-isolation $SRC" "$WORK/isolated.log" \
  || { tail -n 30 "$WORK/isolated.log"; echo "wheel-check: no clear message" >&2; exit 1; }
step "  stopped after $((SECONDS - t0)) s"

step "pip wheel --no-build-isolation (build log: $WORK/build.log while it runs)"
touch "$WORK/marker"
sleep 1
$PY -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/dist" "$SRC" > "$WORK/build.log" 2>&1 \
  || { tail -n 60 "$WORK/build.log"; exit 1; }
# (.git and the folders of other make targets, which may run meanwhile, aside)
changed=$(find "$SRC" -mindepth 1 \( -path "$SRC/.git" -o -path "$SRC/.venv*" -o -path "$SRC/build-cuda" \) \
  -prune -o -newer "$WORK/marker" -print | head -n 5)
[ -z "$changed" ] || { echo "wheel-check: the build wrote into the source tree: $changed" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/fusedrnn-*.whl)
step "built $(basename "$WHEEL")"

$PY -m pip install -q "$WHEEL"
cd "$WORK"  # outside the source tree: the installed wheel, not the checkout
step "smoke test of the installed wheel"
$PY - <<'PY'
import importlib.metadata as md
import importlib.util
import os
import sys

import torch
import fusedrnn

assert os.path.dirname(fusedrnn.__file__).startswith(sys.prefix), fusedrnn.__file__
requires = md.requires("fusedrnn")
pin = f"torch=={torch.__version__.split('+')[0]}"
assert pin in requires, requires
assert fusedrnn.build_info()["torch_built_with"] == torch.__version__
extras = ["pandas", "sklearn", "yfinance", "matplotlib", "tqdm", "numba"]
installed = [m for m in extras if importlib.util.find_spec(m) is not None]
assert not installed, f"the core pulled in {installed}"

torch.manual_seed(0)
ref = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True)
fused = fusedrnn.from_torch(ref)
x = torch.randn(3, 11, 4, requires_grad=True)
(out_f, (h_f, c_f)), (out_r, (h_r, c_r)) = fused(x), ref(x)
torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=1e-5)
torch.testing.assert_close(c_f, c_r, atol=1e-5, rtol=1e-5)
(g_f,) = torch.autograd.grad(out_f.sum(), x)
(g_r,) = torch.autograd.grad(out_r.sum(), x)
torch.testing.assert_close(g_f, g_r, atol=1e-5, rtol=1e-5)
print(f"wheel-check: {fusedrnn.__version__} imports; LSTM matches torch.nn; requires {requires}")
PY
FUSEDRNN=$WORK/venv/bin/fusedrnn
"$FUSEDRNN" --help > help.txt
grep -q "stock" help.txt && ! grep -q '``' help.txt
"$FUSEDRNN" --version | tee version.txt
grep -q "^fusedrnn " version.txt
if "$FUSEDRNN" sine --quick > out.txt 2> err.txt; then
  echo "wheel-check: fusedrnn sine ran without the [apps] extra" >&2; exit 1
fi
[ "$(wc -l < err.txt)" -eq 1 ] && grep -q "pip install 'fusedrnn\[apps\]'" err.txt \
  || { cat err.txt; echo "wheel-check: no one-line message naming the extra" >&2; exit 1; }
step "passed"
