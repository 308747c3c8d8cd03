# make setup : .venv with torch (CPU build, from local disk) and fusedrnn built in place.
# make demo  : the main job (stock forecasting with RNN / LSTM / GRU) on the bundled data.
# make test  : the whole pytest suite.
# make bench : the profiling benchmarks (writes bench/results/).
# make cuda-check : builds with CUDA in .venv-cuda and runs the CPU suite against that build.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
NATIVE_SOURCES := $(shell find cpp cuda -type f 2>/dev/null) CMakeLists.txt pyproject.toml

.PHONY: setup demo test bench cuda-check format lint clean

setup: $(VENV)/.built

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q scikit-build-core pybind11 ninja cmake ruff
	touch $@

$(VENV)/.built: $(VENV)/.deps $(NATIVE_SOURCES)
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	$(PY) -c "import fusedrnn; print('fusedrnn', fusedrnn.__version__, 'built')"
	touch $@

demo: setup
	$(PY) -m fusedrnn stock

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m fusedrnn bench

format:
	$(VENV)/bin/ruff format python tests bench
	clang-format -i $$(find cpp cuda -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)

lint:
	$(VENV)/bin/ruff check python tests bench

clean:
	rm -rf build build-* $(VENV)/.built
