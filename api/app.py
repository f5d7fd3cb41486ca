"""The FastAPI application: routers, middleware, error mapping and per-app resources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api.auth.cache import PrincipalCache
from api.auth.router import router as auth_router
from api.auth.throttle import AttemptLedger, LoginLimits, LoginThrottle
from api.commands.publisher import MqttCommandPublisher
from api.commands.router import router as commands_router
from api.config.router import router as config_router
from api.context import AppContext
from api.efficiency.router import router as metrics_router
from api.errors import install_error_handlers
from api.gateways.router import router as gateways_router
from api.headers import SecurityHeadersMiddleware
from api.health.router import router as health_router
from api.idempotency import IdempotencyMiddleware
from api.issues.router import router as issues_router
from api.issues.types import document_issue_types
from api.limits import BodyLimitMiddleware
from api.machines.router import router as machines_router
from api.machines.stream import StreamHub
from api.middleware import RequestContextMiddleware
from api.oee.router import router as oee_router
from api.openapi import document_responses
from api.pagination import LIST_HEADERS
from api.plant.router import router as plant_router
from api.planttime import PlantTimeMiddleware
from api.prometheus import ApiMetrics, MetricsMiddleware, route_templates
from api.prometheus import router as prometheus_router
from api.stages.router import me_router
from api.stages.router import router as stages_router
from api.ui.docs import router as docs_router
from api.ui.router import STATIC_DIR as UI_STATIC_DIR
from api.ui.router import router as ui_router
from api.users.router import router as users_router
from api.workorders.router import router as workorders_router
from core.contract import MAX_PAYLOAD_BYTES
from core.db import create_engine_from_settings, read_session_factory, session_factory
from core.lifecycle import cancel_and_wait
from core.security import PasswordHasher, TokenService
from core.settings import ApiProcessSettings

TAGS = [
    {"name": "auth", "description": "Log in, register, current user"},
    {"name": "users", "description": "User administration (admin)"},
    {"name": "work orders", "description": "Plan, follow and cancel work orders"},
    {"name": "stages", "description": "Assign, start, pause, resume and finish stages"},
    {"name": "issues", "description": "Report and handle problems on stages"},
    {"name": "metrics", "description": "Efficiency, planned against actual; OEE of stages, machines, shifts, days"},
    {"name": "calendar", "description": "Shift patterns, breaks, holidays, extra shifts; downtime and scrap reasons"},
    {"name": "machines", "description": "Machine registry, machine API keys, HTTP ingestion"},
    {"name": "health", "description": "Liveness, readiness, and the plant's time zone for clients"},
]


def create_app(settings: ApiProcessSettings) -> FastAPI:
    """Build the app; the engine connects lazily and is disposed when the app stops."""
    engine = create_engine_from_settings(settings.database)

    hasher = PasswordHasher(
        time_cost=settings.passwords.argon2_time_cost,
        memory_kib=settings.passwords.argon2_memory_kib,
        max_concurrent=settings.passwords.password_hash_concurrency,
    )
    prometheus = ApiMetrics.create(engine, hasher) if settings.api.api_metrics_enabled else None
    streams = StreamHub(
        max_clients=settings.api.stream_max_clients,
        max_per_user=settings.api.stream_max_clients_per_user,
        retry_after_s=settings.api.stream_retry_ms / 1000,
        on_drop=prometheus.stream_dropped if prometheus is not None else None,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        copying = None
        if prometheus is not None and prometheus.process_figures is not None:
            copying = asyncio.create_task(prometheus.process_figures.copy_forever(), name="api:metrics:figures")
        yield
        if copying is not None:
            await cancel_and_wait([copying])
        streams.close()
        hasher.close()
        await engine.dispose()

    app = FastAPI(
        title="Shopfloor API",
        summary="Production tracking and machine telemetry for the factory floor",
        version="0.1.0",
        docs_url=None,  # api/ui/docs.py serves /api-docs from local files, under a CSP
        redoc_url=None,
        openapi_url="/openapi.json",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    context = AppContext(
        settings=settings,
        engine=engine,
        session_factory=session_factory(engine),
        read_session_factory=read_session_factory(engine),
        hasher=hasher,
        tokens=TokenService(
            key=settings.auth.signing_key,
            issuer=settings.auth.jwt_issuer,
            audience=settings.auth.jwt_audience,
            ttl_s=settings.auth.access_token_ttl_s,
        ),
        login_throttle=LoginThrottle(
            AttemptLedger(
                lambda: context.session_factory,
                longest_window_s=max(settings.auth.login_failure_window_s, settings.auth.registration_window_s),
            ),
            LoginLimits(
                per_user_and_address=settings.auth.login_max_failures_per_user,
                per_address=settings.auth.login_max_failures_per_address,
                window_s=settings.auth.login_failure_window_s,
                slowdown_after=settings.auth.login_slowdown_after,
                slowdown_s=settings.auth.login_slowdown_s,
                registrations_per_address=settings.auth.registration_max_per_address,
                registration_window_s=settings.auth.registration_window_s,
            ),
        ),
        principals=PrincipalCache(settings.auth.auth_user_cache_s),
        streams=streams,
        ui_static_dir=UI_STATIC_DIR,
        prometheus=prometheus,
        commands=MqttCommandPublisher(settings.mqtt.endpoint()) if settings.commands.commands_enabled else None,
    )
    app.state.context = context
    install_error_handlers(app)
    document_issue_types(app, settings.tracking.issue_types)
    document_responses(app)
    routers = [
        auth_router,
        users_router,
        workorders_router,
        stages_router,
        me_router,
        issues_router,
        metrics_router,
        oee_router,
        plant_router,
        machines_router,
        commands_router,
        gateways_router,
        health_router,
        config_router,
        ui_router,
        docs_router,
    ]
    if context.prometheus is not None:
        routers.append(prometheus_router)
    for router in routers:
        app.include_router(router)
    if context.prometheus is not None:
        # Inside the request-context layer: its 500 for an unhandled error is counted here as a 500 too.
        templates = [
            *route_templates(routers),
            *(route.path for route in app.router.routes if isinstance(route, Route)),
        ]
        app.add_middleware(MetricsMiddleware, metrics=context.prometheus, templates=templates)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_credentials=settings.api.cors_allow_credentials,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"],
            expose_headers=["X-Request-ID", "Retry-After", "Idempotency-Replayed", *LIST_HEADERS],
        )
    # Layers from the inside out (each add_middleware wraps what is there): body limits before anything reads a
    # body, authentication included; then the request context, so every request, CORS preflight and 413 included,
    # gets an id, its client address and a log line.
    # Inside the body limit (the body it buffers is bounded): a retried action with the same Idempotency-Key acts once.
    app.add_middleware(
        IdempotencyMiddleware,
        sessions=lambda: context.session_factory,
        tokens=context.tokens,
        clock=lambda: context.clock(),
    )
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.api.max_body_bytes,
        routes=[("POST", r"/machines/[^/]+/readings", MAX_PAYLOAD_BYTES)],
    )
    # Naive datetimes of the request are read in this app's plant zone.
    app.add_middleware(PlantTimeMiddleware, zone=settings.tracking.plant_zone)
    app.add_middleware(RequestContextMiddleware, trusted_proxies=settings.api.trusted_proxies)
    # Outside even that layer, so its own 500 carries the security headers too.
    app.add_middleware(SecurityHeadersMiddleware)
    return app
