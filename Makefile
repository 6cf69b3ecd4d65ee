# browserfleet developer commands. `make dev` runs the platform, `make test` the whole suite.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)

MYPY_PACKAGES := -p browserfleet_contracts -p browserfleet_core -p browserfleet_sdk -p browserfleet_ops -p browserfleet_devkit $(foreach s,$(notdir $(wildcard services/*)),-p browserfleet_$(subst -,_,$(s)))
# the test code, checked by its own config (mypy-tests.ini): every body checked, no annotations required
MYPY_TESTS := $(wildcard libs/*/tests services/*/tests tools/*/tests) tests

.PHONY: help install ui dev test test-fast lint fmt contracts bench fuzz chaos chaos-quick clean

help:
	@echo "make dev        run the whole platform locally (embedded NATS + PostgreSQL, all services, one worker)"
	@echo "make test       run every test (unit, integration, e2e) against real NATS, PostgreSQL and Chromium"
	@echo "make lint       ruff + mypy (strict; the tests with mypy-tests.ini) + import-linter (the layering rules in pyproject.toml)"
	@echo "make contracts  regenerate proto/asyncapi.yaml and proto/openapi.json"
	@echo "make ui         rebuild the dashboard (ui/dist; make install rebuilds it only when a source changed)"
	@echo "make bench      benchmarks (not part of make test)"
	@echo "make fuzz       the full schemathesis run against the whole platform (FUZZ_EXAMPLES=N per operation)"
	@echo "make chaos      kill -9 services, workers, NATS, PostgreSQL under load; count lost/duplicate tasks"
	@echo "make chaos-quick  the same, small (its pytest twin runs in make test)"

install:
	@bash scripts/install.sh

ui:
	@UI_FORCE=1 bash scripts/install.sh

dev: install
	uv run --frozen browserfleet up

test: install
	uv run --frozen python scripts/run_tests.py

lint: install
	uv run --frozen ruff check .
	uv run --frozen ruff format --check .
	uv run --frozen mypy $(MYPY_PACKAGES)
	uv run --frozen mypy --config-file mypy-tests.ini $(MYPY_TESTS)
	uv run --frozen lint-imports --no-cache

fmt:
	uv run --frozen ruff check --fix .
	uv run --frozen ruff format .

contracts: install
	uv run --frozen python -m browserfleet_devkit.contractgen write

bench: install
	uv run --frozen python -m tests.bench $(ARGS)

# the full API fuzz (schemathesis, every operation incl. sign-in, FUZZ_EXAMPLES each, randomised); `make test`
# runs the quick variant of the same test
fuzz: install
	FUZZ_FULL=1 uv run --frozen python -m pytest tests/identity/test_fuzz_api.py -q $(ARGS)

# the chaos suite (tests/chaos): writes bench-results/chaos.json and chaos.log; exits 1 on a lost or
# twice-completed task or an event that never reached the receiver
chaos: install
	uv run --frozen python -m tests.chaos $(ARGS)

chaos-quick: install
	uv run --frozen python -m tests.chaos --quick $(ARGS)

clean:
	rm -rf .browserfleet bench-results
