# One place for the commands a user and CI run. Everything installs into .venv (created on demand).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch; a bare `pip install torch` would pull several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-oldest test-all test-web demo lint format clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed

# Everything but the tests marked slow (the full SHREC'16 render, which benchmarks/data.py also runs).
test: install
	$(PY) -m pip list 2>/dev/null | grep -i -E "^(torch|transformers|datasets|accelerate|huggingface.hub|safetensors) "
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

# The same suite on the oldest versions setup.cfg allows (.ci/oldest.txt), in its own venv; CI runs it after
# `make test`, which resolves the newest releases.
OLDEST_VENV ?= .venv-oldest
$(OLDEST_VENV)/.installed: setup.cfg pyproject.toml .ci/oldest.txt
	rm -rf $(OLDEST_VENV)
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q -c .ci/oldest.txt torch
	$(OLDEST_VENV)/bin/python -m pip install -q -c .ci/oldest.txt -e ".[dev]"
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pip list 2>/dev/null | grep -i -E "^(torch|transformers|datasets|accelerate|huggingface.hub|safetensors) "
	HF_HUB_OFFLINE=1 $(OLDEST_VENV)/bin/python -m pytest -q -m "not slow" tests

test-all: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

# The web page driven by headless Chromium from Debian's packages (never a downloaded browser):
#   apt-get install -y chromium chromium-driver
# Installs the `demo` and `web-test` extras; the screenshot lands in web_test_output/web_page.png.
test-web: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "make test-web needs Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver"; exit 2; }
	$(PY) -m pip install -q -e ".[dev,demo,web-test]" "$(TORCH_SPEC)"
	CLIP2POINT_SCREENSHOT_DIR=web_test_output HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/test_web.py tests/test_web_browser.py

demo: install
	$(PY) examples/demo.py --output_dir demo_output

# ruff, then the layers (.importlinter; CONTRIBUTING.md, "Layers")
lint: install
	$(VENV)/bin/ruff check src tests examples hub benchmarks app.py
	$(VENV)/bin/ruff format --check src tests examples hub benchmarks app.py
	PYTHONPATH=src $(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format src tests examples hub benchmarks app.py
	$(VENV)/bin/ruff check --fix src tests examples hub benchmarks app.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache web_test_output
