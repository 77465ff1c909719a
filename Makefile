# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/demo
# Where pip finds torch: PyTorch's CPU wheel index (on Linux PyPI serves a multi-GB CUDA build).
# Empty (`make venv TORCH_INDEX_URL=`): pip's own configuration only (a mirror, a wheel folder set
# as find-links, an offline machine). pip's configured find-links and extra indexes stay in use
# either way, so a machine that cannot reach the index still installs the wheel it holds (pip
# warns about the unreachable index and goes on).
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test test-monailabel lint provision-demo bench-bundle acdc-pretrain clinical-pretrain bench-robustness compare-acdc-clinical clean-runs venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first: otherwise pip resolves a multi-GB CUDA build.
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0
	# pyproject.toml holds ranges; constraints.txt the exact versions verified together.
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cardiolora demo --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q tests

# A provisioned FLARE deployment on this machine (mTLS on loopback, free ports): startup kits in
# runs/provision/provision/, the participants on a wheel of this checkout, the quick-profile
# rate_my_lora job submitted through the admin API; prints per-site Dice and bytes (jobs/README.md).
# PRETRAINED=runs/demo/pretrain/model.pt for a pretrained base model; ROUNDS=3 for more rounds.
PRETRAINED ?=
ROUNDS ?= 1
provision-demo: $(STAMP)
	$(PY) deploy/provision_demo.py --workdir runs/provision --rounds $(ROUNDS) $(if $(PRETRAINED),--pretrained $(PRETRAINED))

# MONAI Label 0.8.5's own BundleTrainTask / BundleInferTask on the bundle, in a separate venv:
# monailabel needs numpy<2 (numpymaxflow) and pydicom<3 (pydicom-seg), the DICOM side of the
# project pydicom>=3, so the project goes in with --no-deps plus what the bundle imports (h5py).
# tests/monailabel_env/constraints.txt holds the versions pip resolved (the lock of this venv).
# monailabel imports torchvision: ML_TORCH installs torch and torchvision together (the CPU wheels
# from TORCH_INDEX_URL; PyPI's torchvision is a CUDA build that does not load on a CPU torch).
ML_VENV ?= .venv-monailabel
ML_PY := $(ML_VENV)/bin/python
ML_STAMP := $(ML_VENV)/.installed-stamp
ML_TORCH ?= $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0 torchvision==0.28.0
$(ML_STAMP): tests/monailabel_env/constraints.txt
	$(PYTHON3) -m venv $(ML_VENV)
	$(ML_PY) -m pip install --quiet --upgrade pip
	$(ML_PY) -m pip install --quiet $(ML_TORCH)
	SAM2_BUILD_CUDA=0 $(ML_PY) -m pip install --quiet -c tests/monailabel_env/constraints.txt monailabel==0.8.5 monai h5py pytest
	$(ML_PY) -m pip install --quiet --no-deps -e .
	touch $(ML_STAMP)

test-monailabel: $(ML_STAMP)
	$(ML_PY) -m pytest -c tests/monailabel_env/pytest.ini tests/monailabel_env

lint: $(STAMP)
	$(VENV)/bin/ruff check custom tests benchmarks jobs inference deploy

bench-bundle: $(STAMP)
	$(PY) benchmarks/bundle_bench.py $(if $(wildcard runs/demo/pretrain/model.pt),--weights runs/demo/pretrain/model.pt --sites runs/demo/phantoms/sites) $(if $(wildcard runs/acdc-pretrain/model.pt),--acdc-weights runs/acdc-pretrain/model.pt --acdc-data runs/acdc-pretrain/data)

# The ACDC base model used by bench-bundle (../shared/data or any ACDC HDF5 folder as ACDC_H5).
ACDC_H5 ?= ../shared/data/acdc_h5
acdc-pretrain: $(STAMP)
	$(VENV)/bin/cardiolora pretrain --data $(ACDC_H5) --split-by group --value NOR MINF --out runs/acdc-pretrain --epochs 40

# The clinical recipe on real data (profile `clinical` + configs/clinical.json): the 80 ACDC HDF5
# patients split 70/10/20 by patient, every ACDC group in proportion; 90 epochs, measured at
# 42-57 s each on 2 CPU cores (idle to lightly shared: 65-86 min, benchmarks/clinical_pretrain.py
# time); resumable (run it again to continue). Then the held-out test table, and EF / LV mass on
# the test patients found in the official NIfTI layout (ACDC, real spacing); the held-out Dice goes
# into both bundles' metadata.json eval_metrics.
ACDC ?= ../shared/data/acdc
clinical-pretrain: $(STAMP)
	$(VENV)/bin/cardiolora pretrain --data $(ACDC_H5) --profile clinical --stratify group --ratios 0.7 0.1 0.2 --out runs/clinical-pretrain
	$(PY) benchmarks/clinical_pretrain.py report --run runs/clinical-pretrain $(if $(wildcard $(ACDC)),--acdc $(ACDC)) \
		--metadata bundles/cardiac_lora_unet/configs/metadata.json inference/configs/metadata.json

# Cross-vendor robustness of the clinical model (after clinical-pretrain): phantom vendors, the RVSC
# real Siemens study's RV, and the shifted ACDC sites before/after the federation (compare-acdc-clinical).
bench-robustness: $(STAMP)
	$(PY) benchmarks/robustness.py --model runs/clinical-pretrain/model.pt --profile clinical --workdir runs/robustness

# The federated comparison on the clinical recipe: 10 rounds, 3 seeds, 10 methods (hours on 2 cores:
# each run's minutes are in the wall-time table it writes; resumable: finished method runs are
# reused, a failed one is listed and retried, run it again to continue).
compare-acdc-clinical: $(STAMP)
	$(PY) benchmarks/compare.py --source acdc --profile clinical --seeds 0 1 2 --rounds 10 --workdir runs/compare-acdc-clinical

clean-runs:
	rm -rf runs
