"""Every error is an RFC 9457 problem with a request id; unexpected errors reveal nothing inside."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient

from api.app import create_app
from api.context import context_of
from core.models import Role
from tests.support.api import Api, make_settings
from tests.support.db import DIALECT_FREE
from tests.support.logs import logged_events

pytestmark = DIALECT_FREE

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id"}


async def test_unknown_route_is_a_404_problem(api: Api) -> None:
    response = await api.client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == 404
    assert body["type"] == "urn:shopfloor:problem:not_found"
    assert body["request_id"] == response.headers["X-Request-ID"]


async def test_wrong_method_is_a_405_problem(api: Api) -> None:
    response = await api.client.delete("/auth/me")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_validation_errors_list_each_field(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    response = await api.client.post(
        "/auth/users", json={"username": "!", "password": "", "role": "boss"}, headers=admin
    )
    assert response.status_code == 422
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert {error["field"] for error in body["errors"]} == {"username", "password", "role"}
    assert all(error["message"] for error in body["errors"])


async def test_a_given_request_id_is_kept_and_returned(api: Api) -> None:
    response = await api.client.get("/health", headers={"X-Request-ID": "edge-proxy-123"})
    assert response.headers["X-Request-ID"] == "edge-proxy-123"


async def test_an_unsafe_request_id_is_replaced(api: Api) -> None:
    response = await api.client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(response.headers["X-Request-ID"]) == 32


async def test_unexpected_error_is_a_500_problem_without_internals_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(database_url))
    boom = APIRouter()

    @boom.get("/boom")
    async def explode() -> None:
        raise RuntimeError("database password is hunter2")

    app.include_router(boom)
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO):
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "trace-me"})
    await context_of(app).engine.dispose()
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "trace-me"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    (logged,) = logged_events(caplog, "unhandled_error")
    assert logged["request_id"] == "trace-me"
    assert "Traceback" in logged["exception"]
    assert "hunter2" in logged["exception"]
