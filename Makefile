# The two commands a newcomer needs: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= config

.PHONY: run test unit lint venv install install-test bench check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-installs when pyproject.toml changes (the stamp is older than it).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	mkdir -p var
	$(BIN)/hub run --config $(CONFIG)

check: install
	$(BIN)/hub check --config $(CONFIG)

# Style, types and the layering contracts of docs/architecture.md; the generated reference is current.
lint: install-test
	$(BIN)/ruff format --check hub tests tools
	$(BIN)/ruff check hub tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hub docs --check

# The quick tier: every test that needs no peer server (PostgreSQL, sshd, Medplum, Chromium …) and is not
# marked slow, on two processes, with fewer property-test examples. Peer tests skip at once under HUB_UNIT=1
# (tests/support.py need_peer).
unit: install-test
	PYTHONDONTWRITEBYTECODE= HUB_UNIT=1 HUB_FUZZ_EXAMPLES=50 $(BIN)/python -m pytest -q -m "not slow" -n 2

test: install-test lint
	bash tests/peers.sh
	$(BIN)/hub check --config $(CONFIG)
	$(BIN)/hub test --config $(CONFIG)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m pytest -q -s tests/bench -p no:cacheprovider --override-ini addopts=

clean:
	rm -rf $(VENV) var .pytest_cache
