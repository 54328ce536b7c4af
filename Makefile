# The two commands of the README: `make reproduce` and `make test`. Both start from a fresh clone with only
# Python 3.11+ on the machine: they build .venv from pyproject.toml, pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed.stamp
REPORTS ?= reports
# Multi-device tests need the device count set before jax is imported, so they run in their own process.
MULTIDEVICE_FLAGS := --xla_force_host_platform_device_count=8

.PHONY: install reproduce test test-fast test-multidevice bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## The main job: every paper's quick-scale claim, written to $(REPORTS)/REPORT.md and results.json.
reproduce: $(STAMP)
	$(PY) -m experiments.reproduce --out_dir=$(REPORTS)

## The whole test suite: the single-device run, then the 8-device run.
test: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/multidevice -n 2 --dist=loadfile
	XLA_FLAGS=$(MULTIDEVICE_FLAGS) $(PY) -m pytest tests/multidevice

test-fast: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/multidevice -m "not slow"

bench: $(STAMP)
	$(PY) -m experiments.bench_perpgrad

clean:
	rm -rf $(VENV) $(REPORTS) .pytest_cache
