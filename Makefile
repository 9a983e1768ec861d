# Two entry points, each doing all set-up idempotently in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint setup clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first when torch is missing (a CPU build on our machines); users bring their own.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recurrl train experiments/quickstart.yaml

# The whole suite: README's test command and CI's.
test: $(STAMP)
	$(PY) -m pytest -q

# The edit loop: everything but the learning runs, benchmarks and suites (marked slow).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check recurrl envs tests
	$(VENV)/bin/ruff format --check recurrl envs tests

clean:
	rm -rf $(VENV) runs
