# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/demo

.PHONY: demo test lint bench-bundle acdc-pretrain clean-runs venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first: otherwise pip resolves a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cardiolora demo --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check custom tests benchmarks jobs inference

bench-bundle: $(STAMP)
	$(PY) benchmarks/bundle_bench.py $(if $(wildcard runs/demo/pretrain/model.pt),--weights runs/demo/pretrain/model.pt --sites runs/demo/phantoms/sites) $(if $(wildcard runs/acdc-pretrain/model.pt),--acdc-weights runs/acdc-pretrain/model.pt --acdc-data runs/acdc-pretrain/data)

# The ACDC base model used by bench-bundle (../shared/data or any ACDC HDF5 folder as ACDC_H5).
ACDC_H5 ?= ../shared/data/acdc_h5
acdc-pretrain: $(STAMP)
	$(VENV)/bin/cardiolora pretrain --data $(ACDC_H5) --split-by group --value NOR MINF --out runs/acdc-pretrain --epochs 40

clean-runs:
	rm -rf runs
