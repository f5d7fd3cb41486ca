"""The live stream's loop with a fake database: outages are ridden out, and every way the stream ends.

The real database paths are in tests/api/test_stream.py and tests/integration/test_stream_pipeline.py; a database
outage in the middle of a stream is easier to stage with a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from api.machines import stream
from core.errors import NotFound, RateLimited, Unavailable
from core.models import Role
from core.security import TokenService
from tests.support.logs import logged_events

TS = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
CONFIG = stream.StreamConfig(poll_interval_s=0.01, heartbeat_s=0.05, retry_ms=100)
TOKENS = TokenService(key="k" * 48, issuer="shopfloor", audience="shopfloor-api", ttl_s=3600)


@dataclass
class FakeUser:
    is_active: bool = True
    token_version: int = 0


class FakeSession:
    """Only what StreamAccess.allowed uses; the polls are replaced by `script`."""

    def __init__(self, user: FakeUser | None):
        self.user = user

    async def get(self, _model: object, _key: int) -> FakeUser | None:
        return self.user


def factory(user: FakeUser | None = None) -> Any:
    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[FakeSession]:
        yield FakeSession(user)

    return session


def readings(value: float) -> list[stream.Event]:
    event = stream.ReadingsEvent(machine_id=1, readings=[stream.ReadingEvent(tag="temp", ts=TS, value=value)])
    return [("readings", event)]


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What the next polls do, in order: an exception to raise or the events to return (then: nothing new)."""
    steps: list[object] = []

    async def poll(_session: object, *, cursor: stream.Cursor) -> list[stream.Event]:
        step = steps.pop(0) if steps else []
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, list)
        return step

    monkeypatch.setattr(stream, "poll", poll)
    return steps


ACTIVE = FakeUser()


def events_of(
    *,
    user: FakeUser | None = ACTIVE,
    token: str | None = None,
    ticket: bool = False,
    stopping: asyncio.Event | None = None,
    dropped: list[str] | None = None,
) -> AsyncGenerator[str, None]:
    if ticket:  # opened with a ticket: no token to expire, only the user and their token version
        access = stream.StreamAccess(user_id=1, token_version=0)
    else:
        token = token or TOKENS.issue(user_id=1, role=Role.WORKER, now=datetime.now(UTC)).token
        access = stream.StreamAccess(user_id=1, token_version=0, tokens=TOKENS, token=token)
    return stream.machine_events(
        factory(user),
        cursor=stream.Cursor(machine_id=1),
        initial=[],
        config=CONFIG,
        access=access,
        stopping=stopping or asyncio.Event(),
        on_drop=(dropped if dropped is not None else []).append,
    )


async def collect(events: AsyncIterator[str], *, until: str, within_s: float = 2.0) -> str:
    text = ""

    async def read() -> None:
        nonlocal text
        async for chunk in events:
            text += chunk
            if until in text:
                return

    await asyncio.wait_for(read(), timeout=within_s)
    return text


async def test_a_database_outage_is_logged_once_and_the_stream_goes_on(
    script: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    down = OperationalError("SELECT 1", {}, Exception("connection refused"))
    script.extend([down, down, down, readings(212.5)])
    events = events_of()
    text = await collect(events, until='"value":212.5')
    assert text.startswith("retry: 100\n\n")
    assert 'id: 1\nevent: readings\ndata: {"machine_id":1,"readings":[{"tag":"temp"' in text
    assert len(logged_events(caplog, "stream_poll_failed")) == 1
    assert len(logged_events(caplog, "stream_poll_recovered")) == 1
    # Heartbeats went on through the outage and after it.
    assert ": ping\n\n" in await collect(events, until=": ping")
    await events.aclose()


async def test_the_stream_ends_when_asked_to_stop(script: list[object]) -> None:
    stopping = asyncio.Event()
    events = events_of(stopping=stopping)
    assert (await anext(events)).startswith("retry:")
    stopping.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), timeout=1)


async def test_the_stream_ends_when_the_machine_is_gone(script: list[object]) -> None:
    script.extend([readings(1.0), NotFound("Machine 1 does not exist")])
    events = events_of()
    text = await collect(events, until='"value":1.0')
    assert "event: readings" in text
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), timeout=1)


@pytest.mark.parametrize(
    ("user", "token", "ticket"),
    [
        (FakeUser(is_active=False), None, False),
        (None, None, False),  # the user was deleted
        (ACTIVE, TOKENS.issue(user_id=1, role=Role.WORKER, now=datetime(2026, 1, 1, tzinfo=UTC)).token, False),
        (FakeUser(token_version=1), None, False),  # password reset, role change: signed out everywhere
        (FakeUser(is_active=False), None, True),
        (FakeUser(token_version=1), None, True),
    ],
    ids=["deactivated", "deleted", "expired", "signed-out", "ticket-deactivated", "ticket-signed-out"],
)
async def test_the_stream_ends_at_the_heartbeat_when_access_is_gone(
    script: list[object], user: FakeUser | None, token: str | None, ticket: bool
) -> None:
    dropped: list[str] = []
    events = events_of(user=user, token=token, ticket=ticket, dropped=dropped)
    assert (await anext(events)).startswith("retry:")
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), timeout=1)
    assert dropped == ["access_ended"]


async def test_a_ticket_stream_outlives_any_token_while_its_user_stays_signed_in(script: list[object]) -> None:
    events = events_of(ticket=True)
    assert ": ping\n\n" in await collect(events, until=": ping")
    assert ": ping\n\n" in await collect(events, until=": ping")
    await events.aclose()


def test_the_hub_bounds_each_user_and_the_process() -> None:
    hub = stream.StreamHub(max_clients=3, max_per_user=2, retry_after_s=1.5)
    first, second = hub.acquire(user_id=1), hub.acquire(user_id=1)
    with pytest.raises(RateLimited) as refused:
        hub.acquire(user_id=1)
    assert (refused.value.code, refused.value.retry_after_s) == ("too_many_streams_for_user", 2)
    other = hub.acquire(user_id=2)
    with pytest.raises(Unavailable) as full:
        hub.acquire(user_id=3)
    assert full.value.code == "too_many_streams"
    first.release()
    first.release()  # twice is harmless
    assert (hub.open, dict(hub.per_user)) == (2, {1: 1, 2: 1})
    hub.acquire(user_id=1)
    other.release()
    second.release()
    assert (hub.open, dict(hub.per_user)) == (1, {1: 1})
