# syntax=docker/dockerfile:1
# One image for every Shopfloor process: the command picks api, ingest, gateway, simulate or migrate
# (see docker-compose.yml). Build: `docker build -t shopfloor .`

# --- 1. the operator view's bundle (api/ui/web -> api/ui/static) ------------------------------------------
FROM node:20.19-bookworm-slim AS ui
WORKDIR /src/api/ui/web
COPY api/ui/web/package.json api/ui/web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY api/ui/web/ ./
RUN npm run build

# --- 2. the Python environment, made by uv from the lock file ---------------------------------------------
FROM python:3.11.13-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, in a layer of their own that survives code changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY cli cli
COPY core core
COPY api api
COPY ingestor ingestor
COPY gateway gateway
COPY simulators simulators
COPY migrations migrations
COPY mosquitto mosquitto
COPY --from=ui /src/api/ui/static api/ui/static
# The project itself is installed editable (a .pth pointing at /app): the UI bundle, which .gitignore keeps
# out of a wheel, and the migrations are used where they were copied.
RUN uv sync --frozen --no-dev

# --- 3. the runtime: no compilers, no uv, no root ---------------------------------------------------------
FROM python:3.11.13-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 shopfloor \
    && useradd --system --uid 10001 --gid shopfloor --home-dir /app --shell /usr/sbin/nologin shopfloor \
    && mkdir -p /data/gateway \
    && chown -R shopfloor:shopfloor /data
WORKDIR /app
COPY --from=build --chown=shopfloor:shopfloor /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHOPFLOOR_ENV=production \
    LOG_FORMAT=json \
    API_HOST=0.0.0.0 \
    API_PORT=8000
USER shopfloor
EXPOSE 8000 9101 9102
# Liveness of the API (the default command). The other services override this check in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["shopfloor"]
CMD ["api"]
