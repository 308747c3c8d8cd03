# make setup : .venv with torch (CPU build, from local disk) and fusedrnn built in place.
# make demo  : the main job (stock forecasting with RNN / LSTM / GRU) on the bundled data.
# make test  : the whole pytest suite.
# make bench : the profiling benchmarks (writes bench/results/), all threads, then stock and
#              sine at 1 thread.
# make cuda-check : builds with CUDA in .venv-cuda and runs the CPU suite against that build.
# make wheel-check : builds a wheel in a fresh venv, installs it outside the tree, smoke-tests it.
# make gpu-check  : on a GPU machine: build, CUDA tests, cuDNN benchmark, one summary table
#                   (GPU_PY=python3: with that interpreter's CUDA torch, no venv, no downloads).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
NATIVE_SOURCES := $(shell find cpp cuda cmake build_tools -type f 2>/dev/null) CMakeLists.txt \
  pyproject.toml
# What building fusedrnn needs besides torch (README, "Install"): it builds without isolation.
BUILD_REQS := "scikit-build-core>=1.0" "pybind11>=2.12" ninja "cmake>=3.25"
# pip -v's output goes to a log; the build's progress lines ([3/20] Building ...) are shown.
PROGRESS := { grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\] ' || true; }

.PHONY: setup demo test bench cuda-check gpu-check wheel-check format lint clean

setup: $(VENV)/.built

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(BUILD_REQS) ruff clang-format
	touch $@

# Editable, with every extra ([test] = [apps,bench] + pytest, and [deploy]); build folder
# build/<wheel tag>.
$(VENV)/.built: $(VENV)/.deps $(NATIVE_SOURCES)
	@echo "building fusedrnn in place (a few minutes on 2 cores; log: $(VENV)/build.log)"
	set -o pipefail; $(PY) -m pip install -v --no-build-isolation -e ".[test,deploy]" 2>&1 \
	  | tee $(VENV)/build.log | $(PROGRESS) || { tail -n 60 $(VENV)/build.log; exit 1; }
	$(PY) -c "import fusedrnn; print('fusedrnn', fusedrnn.__version__, 'built')"
	touch $@

demo: setup
	$(PY) -m fusedrnn stock

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m fusedrnn bench
	$(PY) -m fusedrnn bench --threads 1 --only stock,sine

# cuda-check: .venv-cuda with the CUDA build of torch (from local disk), the extension built
# with FUSEDRNN_CUDA=1 in build-cuda/ (never the CPU build/), imported on this GPU-less machine;
# prints nvcc's per-kernel resource report (fails on any register spill) and runs the CPU
# suite against that build.
CUDA_VENV ?= .venv-cuda
CUDA_PY := $(CUDA_VENV)/bin/python
CUDA_TORCH_SPEC ?= torch==2.14.1
CUDA_BUILD ?= build-cuda

$(CUDA_VENV)/.deps:
	test -x $(CUDA_PY) || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install -q --upgrade pip
	$(CUDA_PY) -m pip install -q "$(CUDA_TORCH_SPEC)"
	$(CUDA_PY) -m pip install -q $(BUILD_REQS) pytest numba numpy
	touch $@

# $(call cuda_build,DIR[,PY,TARGET]): one shell command, the CUDA build in DIR installed into
# PY's environment (default .venv-cuda, target ".[test,apps]"), its log in DIR/build.log (the
# tail shown on failure); one build job per core.
CUDA_TARGET := ".[test,apps]"
cuda_build = mkdir -p $(1) && start=$$SECONDS && FUSEDRNN_CUDA=1 CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(or $(2),$(CUDA_PY)) -m pip install -v --no-build-isolation -C build-dir=$(1)/{wheel_tag} \
	  $(or $(3),$(CUDA_TARGET)) > $(1)/build.log 2>&1 || { tail -n 60 $(1)/build.log; exit 1; }; \
	  echo "CUDA build took $$((SECONDS - start)) s (log: $(1)/build.log)"

cuda-check: $(CUDA_VENV)/.deps
	$(call cuda_build,$(CUDA_BUILD))
	grep -E "^ *\[[0-9]+/[0-9]+\] (Building|Linking)" $(CUDA_BUILD)/build.log || true
	$(CUDA_PY) cuda/ptxas_report.py $(CUDA_BUILD)/build.log $(CUDA_BUILD)/ptxas
	cd $(CUDA_BUILD) && ../$(CUDA_PY) -c "import torch, fusedrnn; i = fusedrnn.build_info(); \
	  print(i); assert i['cuda'], 'not a CUDA build'; print('GPU present:', torch.cuda.is_available())"
	$(CUDA_PY) -m pytest

wheel-check:
	bash scripts/wheel_smoke.sh

# gpu-check: on a machine with a GPU, one command: the CUDA build for that GPU's architecture
# only (build-gpu/), the CUDA tests, bench/cuda_vs_cudnn.py on H <= 192 workloads (TF32 off)
# in float32/float16/bfloat16, one summary table (also saved under bench/results/). Stops at
# once, before any install or build, where no GPU is visible (cuda/gpu_check.py --probe).
# GPU_PY=python3: use that interpreter's CUDA torch and packages (pytest, numpy) instead of
# making .venv-cuda, with nothing downloaded (GPU machines without a package index).
GPU_BUILD ?= build-gpu
GPU_PY ?=
gpu-check:
	@$(PYTHON) cuda/gpu_check.py --probe
	$(if $(GPU_PY),,$(MAKE) --no-print-directory $(CUDA_VENV)/.deps)
	arch=$$($(or $(GPU_PY),$(CUDA_PY)) cuda/gpu_check.py --arch) || exit 1; \
	  export TORCH_CUDA_ARCH_LIST=$$arch; echo "gpu-check: building for TORCH_CUDA_ARCH_LIST=$$arch"; \
	  $(call cuda_build,$(GPU_BUILD),$(GPU_PY),$(if $(GPU_PY),--no-deps --no-index .))
	$(or $(GPU_PY),$(CUDA_PY)) cuda/gpu_check.py --run --results bench/results

format:
	$(VENV)/bin/ruff format python tests bench
	$(VENV)/bin/clang-format -i $$(find cpp cuda -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)

lint:
	$(VENV)/bin/ruff check python tests bench

clean:
	rm -rf build build-* $(VENV)/.built
