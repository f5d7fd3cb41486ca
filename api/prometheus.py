"""Prometheus metrics of the API: requests by route template and status, latency, requests in flight, DB pool.

Served at GET /metrics (outside the OpenAPI schema; the efficiency endpoints live under /metrics/… and are
unaffected). Routes are labelled by their template (`/workorders/{work_order_id}`), never by the raw path, and
requests that match no route share one label, so a scanner cannot blow up the number of series. Requests in
flight are labelled by route too: for the live stream route that is the number of open SSE connections.

With several API workers (API_WORKERS > 1) the supervisor gives them one folder, PROMETHEUS_MULTIPROC_DIR, where
prometheus_client's multiprocess mode keeps every worker's values: whichever worker answers /metrics answers with
the sum over all of them, a dead worker's counts included (so counters never go back), and each worker copies its
own pool and hashing figures there every `PROCESS_FIGURES_S` and before it answers a scrape.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import Context
from api.machines.stream import DROP_REASONS
from core.errors import NotFound, Unauthenticated
from core.security import PasswordHasher

UNMATCHED = "<unmatched>"
# Set by the API's supervisor for its workers (api.server): prometheus_client's own variable, read when it is first
# imported, and ours, so that a PROMETHEUS_MULTIPROC_DIR left in an operator's environment does not turn a single
# API process into a worker of a group that does not exist.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKERS_METRICS_DIR_ENV = "SHOPFLOOR_API_WORKERS_METRICS_DIR"
# How often a worker copies its pool and hashing figures into the shared folder (and at each scrape it answers).
PROCESS_FIGURES_S = 1.0
POOL_FIGURES = {
    "size": ("shopfloor_api_db_pool_size", "Connections the pool keeps open"),
    "checkedout": ("shopfloor_api_db_pool_checked_out", "Connections in use by requests"),
    "overflow": ("shopfloor_api_db_pool_overflow", "Connections opened beyond the pool size (negative: unused)"),
}
VERIFICATIONS = (
    "shopfloor_api_password_verifications",
    "Password hashes verified (logins and password changes), throttled attempts excluded",
)


def multiprocess_dir() -> str | None:
    """The folder of the workers' shared metrics, when this process is one of several API workers."""
    shared_dir = os.environ.get(WORKERS_METRICS_DIR_ENV)
    return shared_dir if shared_dir and shared_dir == os.environ.get(MULTIPROCESS_DIR_ENV) else None


@dataclass(frozen=True)
class ApiMetrics:
    """The API's metrics, in a registry of their own (one per app, so tests can build several apps)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_progress: Gauge
    streams_dropped: Counter
    # With several workers: this worker's figures, copied to the shared folder.
    process_figures: ProcessFigures | None = None

    @classmethod
    def create(cls, engine: AsyncEngine | None = None, hasher: PasswordHasher | None = None) -> ApiMetrics:
        """Fresh metrics; with an engine, its connection pool figures too."""
        registry = CollectorRegistry()
        shared_dir = multiprocess_dir()
        process_figures = None
        if shared_dir is not None:
            process_figures = ProcessFigures(shared_dir, registry, engine, hasher)
        else:
            if engine is not None:
                registry.register(PoolCollector(engine))
            if hasher is not None:
                registry.register(HasherCollector(hasher))
        metrics = cls(
            registry=registry,
            requests=Counter(
                "shopfloor_api_requests",
                "HTTP requests answered, by method, route template and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "shopfloor_api_request_seconds",
                "Time from request to the end of the response, by method and route template",
                ["method", "route"],
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=registry,
            ),
            in_progress=Gauge(
                "shopfloor_api_requests_in_progress",
                "Requests being answered now (for the stream route: open SSE connections)",
                ["method", "route"],
                registry=registry,
                multiprocess_mode="livesum",  # the live workers' sum; ignored with one process
            ),
            streams_dropped=Counter(
                "shopfloor_api_stream_dropped",
                "Live streams the server ended before the client did: send_timeout (the client stopped reading), "
                "access_ended (token expired, user deactivated or signed out)",
                ["reason"],
                registry=registry,
            ),
            process_figures=process_figures,
        )
        for reason in DROP_REASONS:  # exported as 0 from the start, so rate() and alerts see the series
            metrics.streams_dropped.labels(reason)
        return metrics

    def stream_dropped(self, reason: str) -> None:
        """Count one stream the server dropped (`StreamHub`'s `on_drop`)."""
        self.streams_dropped.labels(reason).inc()

    def exposition(self) -> bytes:
        """The text Prometheus scrapes: this process's metrics, or with several workers the sum over all of them."""
        if self.process_figures is None:
            return generate_latest(self.registry)
        self.process_figures.copy()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.process_figures.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class ProcessFigures:
    """With several workers, the figures only a worker's own objects know (its pool, its hashing count), kept in
    metrics of the shared folder: the pool gauges one series per live worker (a `pid` label: a pool is exhausted
    in one worker, not on average), the verifications a counter summed over all workers."""

    def __init__(
        self, shared_dir: str, registry: CollectorRegistry, engine: AsyncEngine | None, hasher: PasswordHasher | None
    ):
        self.shared_dir = shared_dir
        self.engine = engine
        self.hasher = hasher
        self.copied_verifications = 0
        pool: Any = engine.sync_engine.pool if engine is not None else None
        # Only the figures this pool has (a queue pool has all three; SQLite's have none), as with one worker.
        self.pool = {
            method: Gauge(name, documentation, registry=registry, multiprocess_mode="liveall")
            for method, (name, documentation) in POOL_FIGURES.items()
            if callable(getattr(pool, method, None))
        }
        self.verifications = Counter(*VERIFICATIONS, registry=registry)

    def copy(self) -> None:
        """Write the figures as they are now."""
        if self.engine is not None:
            pool: Any = self.engine.sync_engine.pool
            for method, gauge in self.pool.items():
                gauge.set(float(getattr(pool, method)()))
        if self.hasher is not None:
            verified = self.hasher.verifications
            self.verifications.inc(verified - self.copied_verifications)
            self.copied_verifications = verified

    async def copy_forever(self) -> None:
        """`copy` every PROCESS_FIGURES_S, until cancelled."""
        while True:
            self.copy()
            await asyncio.sleep(PROCESS_FIGURES_S)


class HasherCollector(Collector):
    """How many password verifications ran: what login throttling bounds (read when Prometheus scrapes)."""

    def __init__(self, hasher: PasswordHasher):
        self.hasher = hasher

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One counter."""
        yield CounterMetricFamily(*VERIFICATIONS, value=float(self.hasher.verifications))


class PoolCollector(Collector):
    """The SQLAlchemy pool's figures, read when Prometheus scrapes (nothing to keep up to date)."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Size, checked-out and overflow connections of a queue pool (other pools have none of these)."""
        pool: Any = self.engine.sync_engine.pool
        for method, (name, documentation) in POOL_FIGURES.items():
            if callable(getattr(pool, method, None)):
                yield GaugeMetricFamily(name, documentation, value=float(getattr(pool, method)()))


class RouteLabels:
    """Maps a request path to its route template, among the templates of the app's routers.

    The patterns are compiled once per set of templates (every app of a test run shares them).
    """

    def __init__(self, templates: Iterable[str]):
        self._patterns = _compiled(frozenset(templates))

    def label(self, scope: Scope) -> str:
        """The template the request's path matches, or UNMATCHED."""
        path = scope["path"]
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return UNMATCHED


@functools.cache
def _compiled(templates: frozenset[str]) -> tuple[tuple[re.Pattern[str], str], ...]:
    # Fixed segments win over parameters (`/machines/latest` before `/machines/{machine_id}`).
    ordered = sorted(templates, key=lambda template: (template.count("{"), -len(template), template))
    patterns = []
    for template in ordered:
        pattern, _, _ = compile_path(template)
        patterns.append((pattern, template))
        if template != "/" and template.endswith("/"):
            patterns.append((compile_path(template.rstrip("/"))[0], template))
    return tuple(patterns)


def route_templates(routers: Iterable[APIRouter]) -> list[str]:
    """The path template of every route of these routers (their prefixes included)."""
    return [
        path for router in routers for route in router.routes if isinstance(path := getattr(route, "path", None), str)
    ]


class MetricsMiddleware:
    """Pure ASGI: counts every HTTP request, including those that end in an error response."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, templates: Iterable[str]):
        self.app = app
        self.metrics = metrics
        self.routes = RouteLabels(templates)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Measure one HTTP request (other scopes pass straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, route = scope["method"], self.routes.label(scope)
        status = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        in_progress = self.metrics.in_progress.labels(method, route)
        in_progress.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            in_progress.dec()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(method, route, str(status["code"])).inc()


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, context: Context) -> Response:
    """Prometheus text exposition of the API's metrics."""
    token = context.settings.api.api_metrics_token
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}".encode()
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthenticated("GET /metrics needs the API_METRICS_TOKEN as a bearer token", code="metrics_token")
    if context.prometheus is None:  # pragma: no cover -- the route is mounted only with metrics enabled
        raise NotFound("Metrics are disabled (API_METRICS_ENABLED=false)")
    return Response(context.prometheus.exposition(), media_type=CONTENT_TYPE_LATEST)
