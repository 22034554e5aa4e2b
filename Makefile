# Fresh machine: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install

$(BIN)/insarflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/insarflow

demo: install
	$(BIN)/insarflow demo --workdir ./insarflow-demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check flows tasks deployments tests benchmarks
	$(BIN)/ruff format --check flows tasks deployments tests benchmarks
	$(BIN)/mypy
