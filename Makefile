# The commands the README names. `make demo` and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck services chromium bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deepscan demo

services:
	bash scripts/ensure-services.sh

chromium:  # Debian's Chromium and chromedriver, and axe-core (npm), for the review console's browser tests
	bash scripts/ensure-chromium.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layers and no import cycles: [tool.importlinter] in pyproject.toml

typecheck: $(STAMP)
	$(VENV)/bin/mypy deepscan scanner workers training migrations tests bench

test: $(STAMP) services chromium lint typecheck
	$(VENV)/bin/pytest -n 2  # two processes: most tests wait on worker processes and servers, not the CPU

bench: $(STAMP) services
	$(PY) bench/pipeline.py
	$(PY) bench/queries.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
