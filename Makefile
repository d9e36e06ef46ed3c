# The two commands of the README:  make demo  (set up + run the main job)  and  make test  (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint bench browser peers

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/interp-steer demo --output-dir runs/demo

lint: setup
	$(VENV)/bin/ruff check interp_steer tests benchmarks analyses scripts notebooks/build.py
	$(VENV)/bin/mypy interp_steer

# headless Chromium for the dashboard's browser test: installed when missing and apt-get is usable as root
# (best effort; without it that test is skipped with the reason)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 ; } || \
	  echo "note: no Chromium found or installable; the dashboard browser test will be skipped"

# Two pytest processes, one per core (the machines have 2): the longest real-model tests (the held-out effect
# tests and the notebooks, ~half the time) in one, everything else in the other; both must pass.
TEST_GROUP2 := tests/test_behaviour_real.py tests/test_notebooks.py
test: lint browser
	@log=$$(mktemp); \
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider --durations=10 $(TEST_GROUP2) > $$log 2>&1 & g2=$$!; \
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider --durations=20 $(addprefix --ignore=,$(TEST_GROUP2)); s1=$$?; \
	wait $$g2; s2=$$?; echo "=== $(TEST_GROUP2)"; cat $$log; rm -f $$log; \
	echo "test groups: exit $$s1 (main) and $$s2 ($(TEST_GROUP2))"; exit $$(( s1 || s2 ))

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

bench: setup
	$(PY) benchmarks/run_all.py

# the peers of benchmarks/bench_peers.py, benchmark-only: installed without their pins (steering-vectors pins
# transformers<5, repeng numpy<2; both run on this project's versions, repeng with a NumPy alias in the script)
peers: setup
	$(PY) -m pip install -q --no-deps steering-vectors==0.12.2 repeng==0.4.0
	$(PY) benchmarks/bench_peers.py
