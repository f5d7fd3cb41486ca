"""One log line per request, and every login attempt logged without its password."""

from __future__ import annotations

import logging

import pytest

from core.models import Role
from tests.support.api import Api
from tests.support.db import DIALECT_FREE
from tests.support.factories import TEST_PASSWORD
from tests.support.logs import logged_events

pytestmark = DIALECT_FREE


async def test_each_request_logs_one_line_with_its_context(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    user_id, headers = await api.signed_in(Role.PLANNER, "logger")
    with caplog.at_level(logging.INFO):
        response = await api.client.get("/auth/me", headers={**headers, "X-Request-ID": "req-42"})
    assert response.status_code == 200
    (line,) = [event for event in logged_events(caplog, "request") if event["path"] == "/auth/me"]
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["user_id"] == user_id
    assert line["request_id"] == "req-42"


async def test_failed_request_is_logged_with_its_status(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        await api.client.get("/auth/me")
    (line,) = [event for event in logged_events(caplog, "request") if event["path"] == "/auth/me"]
    assert line["status"] == 401
    assert line["user_id"] is None


async def test_login_attempts_are_logged_without_the_password(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await api.create_user("auditme", Role.WORKER)
    with caplog.at_level(logging.INFO):
        await api.client.post("/auth/login", json={"username": "auditme", "password": "Wrong-Guess-99"})
        await api.client.post("/auth/login", json={"username": "auditme", "password": TEST_PASSWORD})
    (failed,) = logged_events(caplog, "login_failed")
    (succeeded,) = logged_events(caplog, "login_succeeded")
    assert failed["username"] == "auditme"
    assert failed["client"] == "203.0.113.7"
    assert failed["reason"] == "bad_password"
    assert succeeded["username"] == "auditme"
    assert succeeded["client"] == "203.0.113.7"
    everything = caplog.text + repr([record.msg for record in caplog.records])
    assert "Wrong-Guess-99" not in everything
    assert TEST_PASSWORD not in everything
