# Fresh machine: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# ISCE2 from source (no conda): its own Python environment and an env.sh to source.
ISCE2_SOURCE ?= ../shared/isce2/isce2-2.6.5-src.tar.gz
ISCE2_PREFIX ?= $(HOME)/.local/isce2

.PHONY: demo test lint install isce2

$(BIN)/insarflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/insarflow

demo: install
	$(BIN)/insarflow demo --workdir ./insarflow-demo

# Two workers (pytest-xdist); a test file stays on one worker, and the workers take the
# files in the order tests/conftest.py gives them (the real-ISCE2 tests first).
PYTEST_ARGS ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check insarflow flows tasks deployments tests benchmarks
	$(BIN)/ruff format --check insarflow flows tasks deployments tests benchmarks
	$(BIN)/mypy

isce2:
	scripts/build-isce2.sh "$(ISCE2_SOURCE)" "$(ISCE2_PREFIX)"
