# `make test` and `make demo` each create .venv and install what they need on a fresh machine.
# TORCH pins the wheels this project is developed on; elsewhere override it, e.g.
#   make test TORCH="torch torchvision"
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.iqeclip-installed

.PHONY: test demo lint clean browser dicom3tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,medical,serve,export]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

test: lint
	$(PY) -m pytest -q

# Debian's chromium and chromium-driver for the browser tests (they skip without them)
browser:
	bash scripts/install_browser.sh

# Debian's dicom3tools: dciodvfy validates the DICOM SEG and Parametric Map (the checks skip without it)
dicom3tools:
	bash scripts/install_dicom3tools.sh

demo: $(STAMP)
	$(VENV)/bin/iqeclip demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
