# The two commands of the README: `make reproduce` and `make test`. Both start from a fresh clone with only
# Python 3.11+ on the machine: they build .venv from pyproject.toml, pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed.stamp
REPORTS ?= reports
# The `particles` library (the PaRIS peer of bench_paris and of one test) pins numpy < 2, which jax 0.10 cannot
# share: it gets its own environment, called in a subprocess.
PARTICLES_VENV := .venv-particles
PARTICLES_STAMP := $(PARTICLES_VENV)/.installed.stamp
# Multi-device tests need the device count set before jax is imported, so they run in their own process.
MULTIDEVICE_FLAGS := --xla_force_host_platform_device_count=8
# XLA compilation is most of the suite's time on CPU (a warm cache runs the PaRIS experiment test in 11 s instead of
# 45 s), and the same programs recur across test modules, xdist workers and notebook kernels: the tests share JAX's
# persistent compilation cache, kept in the clone (every program, however quick to compile).
comma := ,
TEST_ENV := JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

.PHONY: install reproduce lint test test-fast test-multidevice bench docs notebooks clean $(PARTICLES_VENV)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,docs,build]"
	touch $(STAMP)

$(PARTICLES_STAMP):
	$(PYTHON) -m venv $(PARTICLES_VENV)
	$(PARTICLES_VENV)/bin/python -m pip install --quiet "particles==0.4" "numpy<2"
	touch $(PARTICLES_STAMP)

$(PARTICLES_VENV): $(PARTICLES_STAMP)

install: $(STAMP) $(PARTICLES_STAMP)

## The main job: every paper's quick-scale claim, written to $(REPORTS)/REPORT.md and results.json.
reproduce: $(STAMP)
	$(PY) -m experiments.reproduce --out_dir=$(REPORTS)

## Lint and format check (ruff, configured in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## The whole test suite: lint, the single-device run with the docstring examples of toolkit/, then the 8-device run.
test: lint $(PARTICLES_STAMP)
	$(TEST_ENV) $(PY) -m pytest tests toolkit --doctest-modules --ignore=tests/multidevice -n 2 --dist=loadfile --durations=25
	$(TEST_ENV) XLA_FLAGS=$(MULTIDEVICE_FLAGS) $(PY) -m pytest tests/multidevice

test-fast: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest tests toolkit --doctest-modules --ignore=tests/multidevice -m "not slow"

## The documentation site in docs/_build/html: Sphinx, warnings as errors (tests/test_docs.py runs the same build).
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

## Executes every notebook at its tutorial size and stores its outputs (the docs render them; NOTEBOOKS=a,b for some).
notebooks: $(STAMP)
	$(TEST_ENV) $(PY) docs/notebooks.py $(subst $(comma), ,$(NOTEBOOKS))

bench: $(STAMP) $(PARTICLES_STAMP)
	$(PY) -m experiments.bench_perpgrad
	$(PY) -m experiments.bench_sinkhorn
	$(PY) -m experiments.bench_paris
	$(PY) -m experiments.bench_tmac
	$(PY) -m experiments.bench_sweep

clean:
	rm -rf $(VENV) $(PARTICLES_VENV) $(REPORTS) .pytest_cache .jax_cache docs/_build docs/generated build
