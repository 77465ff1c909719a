# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/demo

.PHONY: demo test lint bench-bundle clean-runs venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first: otherwise pip resolves a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cardiolora demo --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check custom tests benchmarks jobs inference

bench-bundle: $(STAMP)
	$(PY) benchmarks/bundle_bench.py $(if $(wildcard runs/demo/pretrain/model.pt),--weights runs/demo/pretrain/model.pt --sites runs/demo/phantoms/sites)

clean-runs:
	rm -rf runs
