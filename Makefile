# cxr: make install | features | evaluate | test | lint | bench
# Variables can be overridden: make features DATA=path/to/images BACKBONES="mobilenet_v2 xception" WEIGHTS="mobilenet_v2=/path/w.h5"
PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
DATA      ?= ../shared/data/cxr
MANIFEST  ?=
BACKBONES ?= mobilenet_v2
WEIGHTS   ?=
OUT       ?= features
BATCH     ?= 32
REPORTS   ?= reports
EVAL_ARGS ?=

.PHONY: install features evaluate test lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

features: install
	$(BIN)/cxr features $(DATA) $(foreach b,$(BACKBONES),-b $(b)) $(foreach w,$(WEIGHTS),--weights $(w)) \
		$(if $(MANIFEST),--manifest $(MANIFEST)) --out $(OUT) --batch-size $(BATCH)

evaluate: install
	mkdir -p $(REPORTS)
	$(BIN)/cxr evaluate --features $(OUT) --json $(REPORTS)/evaluate.json $(EVAL_ARGS)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
