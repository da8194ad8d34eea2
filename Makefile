# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/feedservice.yaml

.PHONY: run test lint once bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/feedservice run --config $(CONFIG)

once: $(STAMP)
	$(BIN)/feedservice once --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/poll.py
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/related.py
	$(BIN)/python bench/monitor_speed.py

clean:
	rm -rf $(VENV) var feeds/*.atom feeds/*.rss feeds/*.json
