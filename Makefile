# One place for the commands a user and CI run. Everything installs into .venv (created on demand).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch; a bare `pip install torch` would pull several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-all demo lint format clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed

# Everything but the tests marked slow (the full SHREC'16 render, which benchmarks/data.py also runs).
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

test-all: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

demo: install
	$(PY) examples/demo.py --output_dir demo_output

lint: install
	$(VENV)/bin/ruff check src tests examples hub benchmarks
	$(VENV)/bin/ruff format --check src tests examples hub benchmarks

format: install
	$(VENV)/bin/ruff format src tests examples hub benchmarks
	$(VENV)/bin/ruff check --fix src tests examples hub benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
