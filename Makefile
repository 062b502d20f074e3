# The two commands of the README: `make repro` (whole experiment) and `make test`.
# Both create the virtual environment on first use. Override TORCH on a GPU box,
# e.g. `make repro TORCH="torch"` to keep the CUDA build you already have.
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test check lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

lint: setup
	ruff check .

# Two workers, one per core, each test file on one worker (its fixtures are built once).
test: lint
	python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The inner loop: lint and the unit tests, without the end-to-end DVC pipelines (marked slow).
check: lint
	python -m pytest -q -n 2 -m "not slow"

bench: setup
	python bench/pack.py --json
	python bench/moe_layer.py --json
