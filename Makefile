# One command sets everything up: `make demo` (dehaze the examples) or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build these machines keep on disk. Elsewhere pick the build
# for your platform, e.g. `make TORCH=torch install` (pip's default) or a CUDA wheel.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-slow lint clean

$(BIN)/dcmp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(BIN)/dcmp

install: $(BIN)/dcmp

demo: install
	$(BIN)/dcmp dehaze examples demo-output --overwrite
	@echo "restored images are in demo-output/"

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check dcmp_cli tests benchmarks tools
	$(BIN)/ruff format --check dcmp_cli tests benchmarks tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache
