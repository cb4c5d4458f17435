# The two set-up commands of the README: `make sweep` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv sweep test lint

$(BIN)/tqllama: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/tqllama

sweep: venv
	$(BIN)/tqllama build
	$(BIN)/tqllama bench sweep --preset default --chunks 16 --depths 0,1024

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/pytest
