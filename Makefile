# The two commands a newcomer needs: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= config

.PHONY: run test venv install install-test bench check clean

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

test: install-test
	bash tests/peers.sh
	$(BIN)/hub check --config $(CONFIG)
	$(BIN)/hub test --config $(CONFIG)
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m pytest -q -s tests/bench -p no:cacheprovider --override-ini addopts=

clean:
	rm -rf $(VENV) var .pytest_cache
