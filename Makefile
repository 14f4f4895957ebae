# The two commands a newcomer needs (see README.md):
#   make demo   create .venv, install, open JupyterLab on the notebooks with the built-in demo case
#   make test   create .venv, install, run the whole test suite
# Also: make lab (same as make demo), make demo-headless (the pipeline without a browser).
# Only Python 3.11+ is needed on the machine; everything else is installed into .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all install demo demo-headless lab teach lint test bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "workbench needs Python >= 3.11, this is " + sys.version'
	@echo "[1/3] creating $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/3] upgrading pip"
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "[3/3] installing workbench and its dependencies into $(VENV) (a few minutes on a fresh machine; pip lists each package)"
	$(BIN)/python -m pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# JupyterLab on notebooks/ at 127.0.0.1 with a generated token; prints the URL to open.
demo: lab

lab: $(STAMP)
	$(BIN)/workbench lab

# Voila teaching app: notebooks 02-04 at 127.0.0.1 with a generated token (CASE=DIR to pick a case)
teach: $(STAMP)
	$(BIN)/workbench teach $(if $(CASE),--case $(CASE))

# The headless pipeline: load, reconstruct, register, plan and export the demo case.
demo-headless: $(STAMP)
	$(BIN)/workbench demo

# The architecture (docs/architecture.md) is checked before any test runs: the import contracts
# in pyproject.toml (layers, no UI toolkit below widgets) and ruff. A violation fails `make test`.
lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check workbench tests tools

# pytest exits 5 when it collects no test: make treats that as a failure, never a silent pass.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis .ruff_cache .import_linter_cache
