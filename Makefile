# browserfleet developer commands. `make dev` runs the platform, `make test` the whole suite.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)

MYPY_PACKAGES := -p browserfleet_contracts -p browserfleet_core -p browserfleet_sdk $(foreach s,$(notdir $(wildcard services/*)),-p browserfleet_$(subst -,_,$(s)))

.PHONY: help install dev test test-fast lint fmt contracts bench clean

help:
	@echo "make dev        run the whole platform locally (embedded NATS + PostgreSQL, all services, one worker)"
	@echo "make test       run every test (unit, integration, e2e) against real NATS, PostgreSQL and Chromium"
	@echo "make lint       ruff + mypy (strict)"
	@echo "make contracts  regenerate proto/asyncapi.yaml and proto/openapi.json"
	@echo "make bench      benchmarks (not part of make test)"

install:
	@bash scripts/install.sh

dev: install
	uv run --frozen browserfleet up

test: install
	uv run --frozen python scripts/run_tests.py

lint: install
	uv run --frozen ruff check .
	uv run --frozen ruff format --check .
	uv run --frozen mypy $(MYPY_PACKAGES)

fmt:
	uv run --frozen ruff check --fix .
	uv run --frozen ruff format .

contracts: install
	uv run --frozen python -m browserfleet_core.contractgen write

bench: install
	uv run --frozen python -m tests.bench $(ARGS)

clean:
	rm -rf .browserfleet bench-results
