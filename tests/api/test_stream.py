"""The live machine stream (server-sent events) on SQLite and PostgreSQL, served by a real uvicorn.

httpx's ASGI transport collects a whole response before returning it, so it can only check what ends at once
(refusals); everything that streams goes through a real server on a free port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, update

from api.app import create_app
from api.context import context_of
from api.machines.stream import StreamHub
from core.contract import MachineState
from core.models import Machine, MachineLatest, MachineStateChange, Reading, Role, UserAccount
from core.settings import ApiSettings
from tests.support.api import Api, make_settings, token_of
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


@pytest.fixture
async def live(committed_api: Api) -> AsyncIterator[Live]:
    """A second app on the same database, with a 0.1 s poll, a 0.5 s heartbeat and at most 2 streams.

    The served app has its own engine and polls from its own connections, so the test's rows are committed.
    """
    api = committed_api
    settings = make_settings(api.database.url)
    settings.api = ApiSettings(
        stream_poll_interval_s=POLL_S, stream_heartbeat_s=HEARTBEAT_S, stream_max_clients=2, stream_retry_ms=1500
    )
    app = create_app(settings)
    async with serving(app) as served, httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
        yield Live(api=api, app=app, served=served, client=client)
    await context_of(app).engine.dispose()


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


async def test_refused_without_a_valid_token(api: Api) -> None:
    machine_id = (await api.add(make_machine)).id
    anonymous = await api.client.get(f"/machines/{machine_id}/stream")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["code"] == "unauthenticated"
    forged = await api.client.get(f"/machines/{machine_id}/stream", params={"access_token": "not.a.token"})
    assert forged.status_code == 401
    assert forged.json()["detail"] == "The token is invalid or has expired"
    bad_header = await api.client.get(f"/machines/{machine_id}/stream", headers={"Authorization": "Bearer not.a.token"})
    assert bad_header.status_code == 401
    # The query token is for this route only: elsewhere it is not a credential.
    headers = await api.actor(Role.WORKER)
    latest = await api.client.get(f"/machines/{machine_id}/latest", params={"access_token": token_of(headers)})
    assert latest.status_code == 401
    assert context_of(api.app).streams.open == 0


async def test_unknown_machine_is_404_and_the_token_is_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    token = token_of(await api.actor(Role.WORKER))
    response = await api.client.get("/machines/999999/stream", params={"access_token": token})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert context_of(api.app).streams.open == 0
    [line] = [event for event in logged_events(caplog, "request") if event["path"] == "/machines/999999/stream"]
    assert line["status"] == 404
    assert line["user_id"] is not None
    assert logs_showing(caplog, token) == []


async def test_snapshot_on_connect_then_new_rows_as_events(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    api = live.api
    machine_id = await seed_machine(api)
    token = token_of(await api.actor(Role.WORKER))
    url = f"/machines/{machine_id}/stream"
    async with live.client.stream("GET", url, params={"access_token": token}) as response:
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
                {"tag": "cycle_count", "ts": zulu(NOW - timedelta(seconds=3)), "value": 10234.0},
                {"tag": "temp", "ts": zulu(NOW - timedelta(seconds=5)), "value": 212.5},
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
        assert fresh.data == {"machine_id": machine_id, "readings": [{"tag": "temp", "ts": zulu(NOW), "value": 215.25}]}
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

    # The client went away: the stream stops and gives its place back; its log line never shows the token.
    for _ in range(100):
        if live.streams.open == 0:
            break
        await asyncio.sleep(0.05)
    assert live.streams.open == 0
    lines = [event for event in logged_events(caplog, "request") if event["path"] == url]
    assert [line["status"] for line in lines] == [200]
    assert logs_showing(caplog, token) == []


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
        again = await live.client.get(f"/machines/{machine_id}/stream", headers=headers)
        assert again.status_code == 401
    assert live.streams.open == 0


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
