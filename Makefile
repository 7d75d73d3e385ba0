# One place for the commands a user and CI run. Everything installs into .venv (created on demand).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch; a bare `pip install torch` would pull several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-slow test-oldest test-all test-web demo lint format clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed

# transformers' generic model tests (ModelTesterMixin) ship in its sdist, not in its wheel: fetch the sdist of the
# version a venv has, once. tests/test_modeling_generic.py reads them from there and is skipped where it is absent
# (e.g. offline); nothing of transformers' test code is kept in this repository.
TRANSFORMERS_SDIST_DIR ?= .cache/transformers-sdist
export CLIP2POINT_TRANSFORMERS_SDIST_DIR := $(abspath $(TRANSFORMERS_SDIST_DIR))
define fetch_transformers_tests
	@version=$$($(1) -c "import transformers; print(transformers.__version__)"); \
	if [ ! -f "$(TRANSFORMERS_SDIST_DIR)/transformers-$$version.tar.gz" ]; then \
		$(1) -m pip download -q --no-deps --no-binary :all: "transformers==$$version" -d "$(TRANSFORMERS_SDIST_DIR)" \
		|| echo "could not download transformers $$version's sdist: tests/test_modeling_generic.py will be skipped"; \
	fi
endef
VERSIONS = grep -i -E "^(torch|transformers|datasets|accelerate|huggingface.hub|safetensors) "

# Everything but the tests marked slow (the full SHREC'16 render, which benchmarks/data.py also runs).
test: install
	$(call fetch_transformers_tests,$(PY))
	$(PY) -m pip list 2>/dev/null | $(VERSIONS)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

# The tests marked slow: scripts and commands end to end in subprocesses (training runs, kills and resumes).
test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow tests

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
	$(call fetch_transformers_tests,$(OLDEST_VENV)/bin/python)
	$(OLDEST_VENV)/bin/python -m pip list 2>/dev/null | $(VERSIONS)
	HF_HUB_OFFLINE=1 $(OLDEST_VENV)/bin/python -m pytest -q -m "not slow" tests

test-all: install
	$(call fetch_transformers_tests,$(PY))
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
	rm -rf $(VENV) $(OLDEST_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache web_test_output .cache
