# The two commands of the README:  make demo  (set up + run the main job)  and  make test  (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/interp-steer demo --output-dir runs/demo

lint: setup
	$(VENV)/bin/ruff check interp_steer tests benchmarks
	$(VENV)/bin/mypy interp_steer

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

bench: setup
	$(PY) benchmarks/run_all.py
