# goproxy: `make run` starts the proxy, `make test` runs the whole suite, `make check` is what CI runs
# (lint, typecheck of goproxy, tests and bench, compat, the suite). Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint typecheck compat check clean zipapp bench

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(BIN)/python goproxy.py $(ARGS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# The shipped code must run on Python 3.9; tests and bench run on the dev Python (the venv's) only.
compat: $(VENV)/.dev
	$(BIN)/vermin -t=3.9- --no-tips --violations goproxy goproxy.py

check: lint typecheck compat test

# Benchmarks against nginx and the direct upstream (not part of make test): bench/results.md.
bench: $(VENV)/.dev
	@command -v nginx >/dev/null && command -v wrk >/dev/null && command -v curl >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl)
	$(BIN)/python bench/run.py

# dist/goproxy.pyz: one file with the optional packages bundled (pure Python: compiled
# extensions are dropped, PyYAML falls back to its pure-Python loader). Runs on Python 3.9+.
zipapp: dist/goproxy.pyz

dist/goproxy.pyz: $(VENV)/.runtime goproxy.py $(shell find goproxy -name '*.py') requirements.txt
	rm -rf build/zipapp && mkdir -p build/zipapp dist
	$(BIN)/pip install -q --target build/zipapp --only-binary=:all: --python-version 3.9 \
		--implementation cp --platform manylinux2014_x86_64 --no-deps \
		'pyyaml>=6' 'pysocks>=1.7' 'dnspython>=2.4,<2.8'
	find build/zipapp \( -name '*.so' -o -name '__pycache__' -o -name 'RECORD' \) -prune -exec rm -rf {} +
	rm -rf build/zipapp/bin
	cp -r goproxy build/zipapp/goproxy
	find build/zipapp/goproxy -name '__pycache__' -prune -exec rm -rf {} +
	printf 'import sys\nfrom goproxy.cli import main\nsys.exit(main())\n' > build/zipapp/__main__.py
	$(BIN)/python -m zipapp build/zipapp -o $@.tmp -p '/usr/bin/env python3' -c
	mv $@.tmp $@

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache
