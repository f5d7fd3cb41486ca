"""The live machine stream (server-sent events) on SQLite and PostgreSQL, served by a real uvicorn.

httpx's ASGI transport collects a whole response before returning it, so it can only check what ends at once
(refusals); everything that streams goes through a real server on a free port. The attacks of the hardening issue
(a token in the URL, a ticket used twice or late or after a sign-out, one user taking every place, a client that
stops reading) are made against that server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select, update

from api.app import create_app
from api.context import context_of
from api.machines.stream import StreamHub
from core.contract import MachineState
from core.models import Machine, MachineLatest, MachineStateChange, Reading, Role, StreamTicket, UserAccount
from tests.support.api import Api, Headers, make_settings, token_of
from tests.support.factories import make_machine
from tests.support.logs import logged_events
from tests.support.sse import Block, EventReader, Served, named, serving

NOW = datetime.now(UTC).replace(microsecond=0)
POLL_S = 0.1
HEARTBEAT_S = 0.5


def zulu(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def logs_showing(caplog: pytest.LogCaptureFixture, secret: str) -> list[str]:
    """Log records that contain `secret`. uvicorn's access log is left out: `shopfloor api` turns it off, but
    pytest attaches its capture handler to every non-propagating logger, which switches it on in tests (the
    integration test checks a real `shopfloor api` process's whole output instead)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name != "uvicorn.access" and secret in f"{record.getMessage()} {record.msg}"
    ]


@dataclass
class Live:
    """The app on a real server with short stream intervals, next to `api` (its database and users, committed)."""

    api: Api
    app: FastAPI
    served: Served
    client: httpx.AsyncClient

    @property
    def streams(self) -> StreamHub:
        hub: StreamHub = context_of(self.app).streams
        return hub

    def set_now(self, now: datetime) -> None:
        """Freeze the served app's clock (tickets are made and checked by it)."""
        context_of(self.app).clock = lambda: now

    async def ticket(self, headers: Headers, machine_id: int) -> dict[str, Any]:
        """A new stream ticket for this machine, asked for with these headers."""
        response = await self.client.post(f"/machines/{machine_id}/stream/ticket", headers=headers)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def status_of(self, url: str, headers: Headers | None = None) -> int:
        """Open a stream, note its status and close it at once."""
        async with self.client.stream("GET", url, headers=headers) as response:
            return response.status_code

    async def until_open(self, count: int, *, within_s: float = 5.0) -> None:
        """Wait until the served app has `count` streams open."""
        for _ in range(int(within_s / 0.025)):
            if self.streams.open == count:
                return
            await asyncio.sleep(0.025)
        assert self.streams.open == count


@contextlib.asynccontextmanager
async def serving_live(api: Api, **stream: Any) -> AsyncIterator[Live]:
    """A second app on the same database, with a 0.1 s poll, a 0.5 s heartbeat and at most 2 streams unless
    `stream` says otherwise (ApiSettings fields).

    The served app has its own engine and polls from its own connections, so the test's rows are committed.
    """
    defaults: dict[str, Any] = {
        "stream_poll_interval_s": POLL_S,
        "stream_heartbeat_s": HEARTBEAT_S,
        "stream_max_clients": 2,
        "stream_retry_ms": 1500,
    }
    app = create_app(make_settings(api.database.url, api={**defaults, **stream}))
    try:
        async with serving(app) as served, httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
            yield Live(api=api, app=app, served=served, client=client)
    finally:
        await context_of(app).engine.dispose()


@pytest.fixture
async def live(committed_api: Api) -> AsyncIterator[Live]:
    """The app on a real server with short stream intervals (see `serving_live`)."""
    async with serving_live(committed_api) as live:
        yield live


async def seed_machine(api: Api) -> int:
    """A machine with two latest values, a state history (idle since 07:00, repeated at 07:30) and a status."""
    machine_id = (await api.add(make_machine)).id
    async with api.begin() as conn:
        await conn.execute(
            insert(MachineLatest),
            [
                {"machine_id": machine_id, "tag": "temp", "ts": NOW - timedelta(seconds=5), "value": 212.5},
                {"machine_id": machine_id, "tag": "cycle_count", "ts": NOW - timedelta(seconds=3), "value": 10234},
            ],
        )
        await conn.execute(
            insert(MachineStateChange),
            [
                {"machine_id": machine_id, "ts": NOW - timedelta(hours=2), "state": MachineState.RUNNING},
                {"machine_id": machine_id, "ts": NOW - timedelta(hours=1), "state": MachineState.IDLE},
                {"machine_id": machine_id, "ts": NOW - timedelta(minutes=30), "state": MachineState.IDLE},
            ],
        )
        await conn.execute(
            update(Machine)
            .where(Machine.id == machine_id)
            .values(online=True, status_changed_at=NOW - timedelta(hours=3), last_seen_at=NOW - timedelta(seconds=3))
        )
    return machine_id


async def test_refused_without_a_valid_token_or_ticket(api: Api) -> None:
    machine_id = (await api.add(make_machine)).id
    url = f"/machines/{machine_id}/stream"
    anonymous = await api.client.get(url)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["code"] == "unauthenticated"
    bad_header = await api.client.get(url, headers={"Authorization": "Bearer not.a.token"})
    assert bad_header.status_code == 401
    assert bad_header.json()["detail"] == "The token is invalid or has expired"
    forged = await api.client.get(url, params={"ticket": "made-up"})
    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_ticket"
    assert "POST /machines/{machine_id}/stream/ticket" in forged.json()["detail"]
    assert context_of(api.app).streams.open == 0


async def test_a_token_in_the_url_is_refused_even_when_valid(api: Api) -> None:
    """The old `?access_token=` (kept by proxies and browser history) opens nothing, whatever else is sent."""
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.WORKER)
    url = f"/machines/{machine_id}/stream"
    for extra in ({}, headers):
        refused = await api.client.get(url, params={"access_token": token_of(headers)}, headers=extra)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "token_in_url"
        assert "ticket" in refused.json()["detail"]
    # Nor is it a credential anywhere else.
    latest = await api.client.get(f"/machines/{machine_id}/latest", params={"access_token": token_of(headers)})
    assert latest.status_code == 401
    assert context_of(api.app).streams.open == 0


async def test_unknown_machine_is_404_and_the_token_is_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    headers = await api.actor(Role.WORKER)
    response = await api.client.get("/machines/999999/stream", headers=headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    ticket = await api.client.post("/machines/999999/stream/ticket", headers=headers)
    assert ticket.status_code == 404
    assert ticket.json()["code"] == "not_found"
    assert context_of(api.app).streams.open == 0
    [line] = [event for event in logged_events(caplog, "request") if event["path"] == "/machines/999999/stream"]
    assert line["status"] == 404
    assert line["user_id"] is not None
    assert logs_showing(caplog, token_of(headers)) == []


async def test_snapshot_on_connect_then_new_rows_as_events(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    api = live.api
    machine_id = await seed_machine(api)
    headers = await api.actor(Role.WORKER)
    ticket = await live.ticket(headers, machine_id)
    assert ticket["expires_in"] == 30
    assert ticket["url"] == f"/machines/{machine_id}/stream?ticket={ticket['ticket']}"
    url = f"/machines/{machine_id}/stream"
    async with live.client.stream("GET", ticket["url"]) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        reader = EventReader(response)
        advice = await reader.block()
        assert advice.fields == [("retry", "1500")]
        readings, state, status = [await reader.block() for _ in range(3)]
        assert (readings.event, state.event, status.event) == ("readings", "state", "status")
        assert [block.get("id") for block in (readings, state, status)] == ["1", "2", "3"]
        assert readings.data == {
            "machine_id": machine_id,
            "readings": [
                {"tag": "cycle_count", "ts": zulu(NOW - timedelta(seconds=3)), "value": 10234.0, "quality": "good"},
                {"tag": "temp", "ts": zulu(NOW - timedelta(seconds=5)), "value": 212.5, "quality": "good"},
            ],
        }
        # Idle since the first idle row: the repeated one half an hour later is no change.
        assert state.data == {"machine_id": machine_id, "state": "idle", "ts": zulu(NOW - timedelta(hours=1))}
        assert status.data == {
            "machine_id": machine_id,
            "online": True,
            "last_seen_at": zulu(NOW - timedelta(seconds=3)),
        }
        assert live.streams.open == 1

        # New rows as the ingestor writes them: a reading, the newer latest value of one tag, a state change.
        async with api.begin() as conn:
            await conn.execute(insert(Reading).values(machine_id=machine_id, tag="temp", ts=NOW, value=215.25))
            await conn.execute(
                update(MachineLatest)
                .where(MachineLatest.machine_id == machine_id, MachineLatest.tag == "temp")
                .values(ts=NOW, value=215.25)
            )
        written = asyncio.get_running_loop().time()
        fresh = await reader.until(named("readings"), within_s=3)
        assert fresh.data == {
            "machine_id": machine_id,
            "readings": [{"tag": "temp", "ts": zulu(NOW), "value": 215.25, "quality": "good"}],
        }
        assert fresh.received_at - written < 1.0

        async with api.begin() as conn:
            await conn.execute(
                insert(MachineStateChange).values(
                    machine_id=machine_id, ts=NOW + timedelta(seconds=1), state=MachineState.ALARM
                )
            )
            await conn.execute(update(Machine).where(Machine.id == machine_id).values(online=False))
        changed = await reader.until(named("state"), within_s=3)
        assert changed.data == {"machine_id": machine_id, "state": "alarm", "ts": zulu(NOW + timedelta(seconds=1))}
        offline = await reader.until(named("status"), within_s=3)
        assert offline.data["online"] is False
        assert int(offline.get("id") or 0) > int(changed.get("id") or 0) > int(fresh.get("id") or 0) > 3

    # The client went away: the stream stops and gives its place back; its log line never shows the ticket.
    await live.until_open(0)
    lines = [event for event in logged_events(caplog, "request") if event["path"] == url]
    assert [line["status"] for line in lines] == [200]
    assert lines[0]["user_id"] is not None
    assert logs_showing(caplog, ticket["ticket"]) == []
    assert logs_showing(caplog, token_of(headers)) == []
    async with api.session() as session:
        stored = await session.scalar(select(StreamTicket.ticket_hash))
    assert stored is not None
    assert ticket["ticket"] not in stored  # only its SHA-256 is kept


async def test_heartbeat_and_last_seen_with_it(live: Live) -> None:
    api = live.api
    machine_id = await seed_machine(api)
    headers = await api.actor(Role.PLANNER)
    async with live.client.stream("GET", f"/machines/{machine_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        reader = EventReader(response)
        seen: list[Block] = []
        await reader.until(named("status"), within_s=3)
        opened = asyncio.get_running_loop().time()
        ping = await reader.until(lambda block: block.comments == ["ping"], within_s=3, seen=seen)
        assert seen == []  # nothing changed: nothing but the heartbeat
        assert ping.fields == []
        assert HEARTBEAT_S * 0.8 < ping.received_at - opened < HEARTBEAT_S + 1.0
        second = await reader.until(lambda block: block.comments == ["ping"], within_s=3)
        assert second.received_at - ping.received_at == pytest.approx(HEARTBEAT_S, abs=0.35)

        # Only last_seen_at moved (no status message): it goes out with the next heartbeat, not at once.
        async with api.begin() as conn:
            await conn.execute(update(Machine).where(Machine.id == machine_id).values(last_seen_at=NOW))
        status = await reader.until(named("status"), within_s=3)
        assert status.data == {"machine_id": machine_id, "online": True, "last_seen_at": zulu(NOW)}
        beat = await reader.block()
        assert beat.comments == ["ping"]
        assert beat.received_at - status.received_at < 0.05  # sent together


async def test_a_deactivated_user_loses_the_stream_at_the_next_heartbeat(live: Live) -> None:
    api = live.api
    machine_id = (await api.add(make_machine)).id
    user_id, headers = await api.signed_in(Role.WORKER, "leaving-worker")
    async with live.client.stream("GET", f"/machines/{machine_id}/stream", headers=headers) as response:
        reader = EventReader(response)
        await reader.until(named("status"), within_s=3)
        async with api.begin() as conn:
            await conn.execute(update(UserAccount).where(UserAccount.id == user_id).values(is_active=False))
        deactivated = asyncio.get_running_loop().time()
        await reader.ended(within_s=HEARTBEAT_S + 2)
        assert asyncio.get_running_loop().time() - deactivated < HEARTBEAT_S + 0.5
        # A change behind the API's back (not through it) reaches a new request once AUTH_USER_CACHE_S has passed.
        principals = context_of(live.app).principals
        principals.clock = lambda: time.monotonic() + principals.ttl_s
        again = await live.client.get(f"/machines/{machine_id}/stream", headers=headers)
        assert again.status_code == 401
    assert live.streams.open == 0


async def test_a_stream_opened_with_a_token_revoked_elsewhere_ends_at_the_next_heartbeat(live: Live) -> None:
    """The attack: another API process revoked the token (its password changed); this one still remembers the token
    for AUTH_USER_CACHE_S and lets the stream open, but the stream keeps the token's version, not the row's, so it
    ends at its first heartbeat instead of lasting until the token expires."""
    api = live.api
    machine_id = (await api.add(make_machine)).id
    user_id, headers = await api.signed_in(Role.WORKER)
    assert (await live.client.get("/machines", headers=headers)).status_code == 200  # remembered from here
    async with api.begin() as conn:
        await conn.execute(
            update(UserAccount).where(UserAccount.id == user_id).values(token_version=UserAccount.token_version + 1)
        )
    async with live.client.stream("GET", f"/machines/{machine_id}/stream", headers=headers) as response:
        assert response.status_code == 200  # within the documented window
        await EventReader(response).ended(within_s=HEARTBEAT_S + 2)


async def test_at_most_max_clients_streams_then_503(live: Live) -> None:
    api = live.api
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.ADMIN)
    url = f"/machines/{machine_id}/stream"
    async with live.client.stream("GET", url, headers=headers) as first:
        assert first.status_code == 200
        async with live.client.stream("GET", url, headers=headers) as second:
            assert second.status_code == 200
            third = await live.client.get(url, headers=headers)
            assert third.status_code == 503
            assert third.headers["content-type"] == "application/problem+json"
            assert third.json()["code"] == "too_many_streams"
            assert live.streams.open == 2
        for _ in range(100):
            if live.streams.open == 1:
                break
            await asyncio.sleep(0.05)
        assert live.streams.open == 1
        async with live.client.stream("GET", url, headers=headers) as again:
            assert again.status_code == 200
            assert (await EventReader(again).until(named("status"), within_s=3)).data["machine_id"] == machine_id


async def test_server_shutdown_ends_open_streams_promptly(live: Live) -> None:
    api = live.api
    machine_id = await seed_machine(api)
    headers = await api.actor(Role.WORKER)
    async with live.client.stream("GET", f"/machines/{machine_id}/stream", headers=headers) as response:
        reader = EventReader(response)
        await reader.until(named("status"), within_s=3)
        started = asyncio.get_running_loop().time()
        live.served.server.should_exit = True  # what SIGTERM does
        await reader.ended(within_s=3)
        await asyncio.wait_for(live.served.task, timeout=5)
        assert asyncio.get_running_loop().time() - started < 2.0
    assert live.streams.open == 0


async def test_a_ticket_opens_one_stream_once(live: Live) -> None:
    api = live.api
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.WORKER)
    ticket = await live.ticket(headers, machine_id)
    async with live.client.stream("GET", ticket["url"]) as first:
        assert first.status_code == 200
        await EventReader(first).until(named("status"), within_s=3)
        # Copied from the address bar, a proxy log or the browser history: already spent.
        again = await live.client.get(ticket["url"])
        assert again.status_code == 401
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["code"] == "invalid_ticket"
    await live.until_open(0)
    assert (await live.client.get(ticket["url"])).status_code == 401

    # Two requests racing with one ticket: one stream, one refusal.
    raced = await live.ticket(headers, machine_id)
    statuses = await asyncio.gather(live.status_of(raced["url"]), live.status_of(raced["url"]))
    assert sorted(statuses) == [200, 401]


async def test_an_expired_ticket_is_refused_and_expired_tickets_are_deleted(live: Live) -> None:
    api = live.api
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.WORKER)
    minted_at = datetime.now(UTC)
    live.set_now(minted_at)
    late = await live.ticket(headers, machine_id)
    live.set_now(minted_at + timedelta(seconds=31))  # STREAM_TICKET_TTL_S is 30
    refused = await live.client.get(late["url"])
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_ticket"
    # The next ticket made clears the expired ones away; it works in its own 30 seconds.
    fresh = await live.ticket(headers, machine_id)
    async with api.session() as session:
        assert await session.scalar(select(func.count()).select_from(StreamTicket)) == 1
    async with live.client.stream("GET", fresh["url"]) as response:
        assert response.status_code == 200


async def test_a_ticket_is_void_once_its_user_is_deactivated_or_signed_out(live: Live) -> None:
    api = live.api
    machine_id = (await api.add(make_machine)).id
    user_id, headers = await api.signed_in(Role.WORKER)
    before_reset = await live.ticket(headers, machine_id)
    async with api.begin() as conn:  # what a password reset or role change does
        await conn.execute(update(UserAccount).where(UserAccount.id == user_id).values(token_version=1))
    refused = await live.client.get(before_reset["url"])
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_ticket"

    async with api.begin() as conn:
        await conn.execute(update(UserAccount).where(UserAccount.id == user_id).values(token_version=0))
    before_deactivation = await live.ticket(headers, machine_id)
    async with api.begin() as conn:
        await conn.execute(update(UserAccount).where(UserAccount.id == user_id).values(is_active=False))
    assert (await live.client.get(before_deactivation["url"])).status_code == 401
    assert live.streams.open == 0


async def test_a_ticket_stream_ends_at_the_next_heartbeat_once_its_user_is_signed_out(live: Live) -> None:
    api = live.api
    machine_id = (await api.add(make_machine)).id
    user_id, headers = await api.signed_in(Role.WORKER)
    ticket = await live.ticket(headers, machine_id)
    async with live.client.stream("GET", ticket["url"]) as response:
        reader = EventReader(response)
        await reader.until(named("status"), within_s=3)
        await reader.until(lambda block: block.comments == ["ping"], within_s=3)  # still allowed a beat later
        async with api.begin() as conn:
            await conn.execute(
                update(UserAccount).where(UserAccount.id == user_id).values(token_version=UserAccount.token_version + 1)
            )
        signed_out = asyncio.get_running_loop().time()
        await reader.ended(within_s=HEARTBEAT_S + 2)
        assert asyncio.get_running_loop().time() - signed_out < HEARTBEAT_S + 0.5
    assert live.streams.open == 0
    assert await dropped(live, "access_ended") == 1


async def dropped(live: Live, reason: str) -> float:
    """shopfloor_api_stream_dropped_total for this reason, as /metrics shows it."""
    response = await live.client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "shopfloor_api_stream_dropped_total" and sample.labels == {"reason": reason}:
                return sample.value
    raise AssertionError(f"no shopfloor_api_stream_dropped_total for {reason}")


async def test_one_user_cannot_take_every_stream(committed_api: Api) -> None:
    """A worker opens their share of streams and asks for more: refused, while the admin still gets one."""
    async with serving_live(committed_api, stream_max_clients=3, stream_max_clients_per_user=2) as live:
        api = live.api
        machine_id = (await api.add(make_machine)).id
        worker = await api.actor(Role.WORKER)
        admin = await api.actor(Role.ADMIN)
        url = f"/machines/{machine_id}/stream"
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2):
                opened = await held.enter_async_context(
                    live.client.stream("GET", (await live.ticket(worker, machine_id))["url"])
                )
                assert opened.status_code == 200
            by_ticket = await live.client.get((await live.ticket(worker, machine_id))["url"])
            by_header = await live.client.get(url, headers=worker)
            for refused in (by_ticket, by_header):
                assert refused.status_code == 429
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["code"] == "too_many_streams_for_user"
                assert refused.headers["retry-after"] == "2"  # STREAM_RETRY_MS 1500, in whole seconds
            assert live.streams.open == 2
            async with live.client.stream("GET", (await live.ticket(admin, machine_id))["url"]) as admins:
                assert admins.status_code == 200
                assert (await EventReader(admins).until(named("status"), within_s=3)).data["machine_id"] == machine_id
        await live.until_open(0)
        async with live.client.stream("GET", url, headers=worker) as again:
            assert again.status_code == 200


async def test_a_client_that_stops_reading_is_dropped_and_its_place_freed(committed_api: Api) -> None:
    """A raw socket asks for a stream and never reads: once the server's buffers are full its sends stall, and the
    stream is dropped after STREAM_SEND_TIMEOUT_S, counted, and the user may stream again."""
    stream_settings = {
        "stream_heartbeat_s": 0.2,
        "stream_send_timeout_s": 1.0,
        "stream_max_clients_per_user": 1,
    }
    async with serving_live(committed_api, **stream_settings) as live:
        api = live.api
        machine_id = (await api.add(make_machine)).id
        # About 5 MB of snapshot, more than the kernel's socket buffers hold on loopback (about 3 MB with the client's
        # small receive buffer), so uvicorn's transport is left over its high-water mark and the next send waits.
        tags = [f"{index:06d}".ljust(64, "x") for index in range(40_000)]
        async with api.begin() as conn:
            await conn.execute(
                insert(MachineLatest),
                [{"machine_id": machine_id, "tag": tag, "ts": NOW, "value": 1234.5678} for tag in tags],
            )
        headers = await api.actor(Role.WORKER)
        assert await dropped(live, "send_timeout") == 0

        address = urlsplit(live.served.base_url)
        loop = asyncio.get_running_loop()
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.setblocking(False)
            await loop.sock_connect(stalled, (address.hostname, address.port))
            request = (
                f"GET /machines/{machine_id}/stream HTTP/1.1\r\nHost: {address.netloc}\r\n"
                f"Authorization: {headers['Authorization']}\r\nAccept: text/event-stream\r\n\r\n"
            )
            await loop.sock_sendall(stalled, request.encode())
            await live.until_open(1)
            # While it holds its user's only place, that user gets no other stream.
            refused = await live.client.get(f"/machines/{machine_id}/stream", headers=headers)
            assert refused.status_code == 429
            assert refused.json()["code"] == "too_many_streams_for_user"

            # Dropped: the snapshot takes a moment, the next heartbeat's send then waits STREAM_SEND_TIMEOUT_S.
            await live.until_open(0, within_s=20)
            assert await dropped(live, "send_timeout") == 1
            # The user's place is free again (another machine: its snapshot is quick to make).
            other = (await api.add(make_machine, "press-2")).id
            async with live.client.stream("GET", f"/machines/{other}/stream", headers=headers) as again:
                assert again.status_code == 200
                assert (await EventReader(again).until(named("status"), within_s=3)).data["machine_id"] == other
