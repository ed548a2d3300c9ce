# Decision Ledger — every entry point bootstraps itself on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install test unit integration demo lint typecheck check bench broker-stop clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml ledger/_avrovm.pyx ledger/core/_canonical.pyx
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with test/bench/dev extras

test: lint typecheck  ## the one check CI runs: format, lint, types, then unit tests (one worker per core) + integration tests (starts the broker itself)
	$(BIN)/python -m pytest tests -m 'not integration' -n auto
	LEDGER_TEST_BROKER=local $(BIN)/python -m pytest tests -m integration

unit: $(STAMP)  ## unit tests only (no broker)
	$(BIN)/python -m pytest tests -m 'not integration' -n auto

integration: $(STAMP)  ## integration tests only (against a real local broker)
	LEDGER_TEST_BROKER=local $(BIN)/python -m pytest tests -m integration

demo: $(STAMP)  ## end-to-end demo on the local broker
	bash examples/demo.sh

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check ledger processors tests benchmarks examples
	$(BIN)/ruff format --check ledger processors tests benchmarks examples

typecheck: $(STAMP)  ## mypy strict on ledger/ and processors/
	$(BIN)/mypy

check: test  ## alias of test (format, lint, types, tests)

bench: $(STAMP)  ## run every benchmark in turn, each printing its figures and ratios (`python -m benchmarks --list` names them)
	$(BIN)/python -m benchmarks

broker-stop: $(STAMP)  ## stop the local broker
	$(BIN)/ledger broker stop

clean:  ## remove the virtualenv, caches and the built C code (not the broker cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	rm -f ledger/_avrovm.c ledger/core/_canonical.c ledger/_avrovm.*.so ledger/core/_canonical.*.so
