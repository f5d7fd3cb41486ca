"""The live machine stream: server-sent events of new readings, state changes and online status.

A stream starts with a snapshot (latest value of each tag, current state, status) read in the request's session.
Then it polls `machine_latest`, `machine_state` and `machine` every STREAM_POLL_INTERVAL_S, each poll in a
session of its own that is closed before it waits, so it works the same on SQLite, PostgreSQL and TimescaleDB and
never holds a connection between polls. What it sends:

- `readings`: the tags whose newest value moved on since the last event (the latest value per tag at each poll,
  not every sample in between: `/machines/{id}/readings` has those);
- `state`: each change of state, in source-time order (a row arriving late, older than one already sent, is left
  to `/machines/{id}/states`);
- `status`: when `online` changes; a `last_seen_at` that only moved goes out with the next heartbeat;
- `: ping` every STREAM_HEARTBEAT_S, so proxies keep the connection and clients notice a dead one.

A stream is opened with the Authorization header or with a single-use ticket (`api.machines.tickets`; a browser's
EventSource cannot send headers, and a token in the URL would be kept by proxies and browser history). At every
heartbeat the caller is checked again: the user must still exist, be active and have the token version the stream
was opened with (a password reset, deactivation or role change bumps it), and a stream opened with a token ends when
that token expires. The browser's reconnect then gets a 401, as every other request would.

`StreamHub` bounds the open streams of one process and of one user, and ends them all when the app stops. uvicorn
waits for open responses before it runs the app's shutdown, so `api.server.ApiServer` ends the streams first.
Each chunk must be taken by the client within STREAM_SEND_TIMEOUT_S: uvicorn's `send` waits while the connection's
write buffer is over its high-water mark (the client stopped reading and its TCP window is full), so without a
timeout such a client would keep its place, and its user's, for as long as it stays connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from api.machines import history
from api.machines.service import get_machine
from core.contract import MachineState, QualityName, quality_name
from core.db import TRANSIENT_DB_ERRORS
from core.errors import NotFound, RateLimited, Unavailable
from core.logging import get_logger
from core.models import Machine, MachineLatest, MachineStateChange, UserAccount
from core.security import InvalidToken, TokenService

log = get_logger("shopfloor.api.stream")

EVENT_STREAM = "text/event-stream"
PING = ": ping\n\n"
MAX_STATE_ROWS = 1000
# Why the server ended a stream before its client did (the `reason` of shopfloor_api_stream_dropped_total).
SEND_TIMEOUT = "send_timeout"
ACCESS_ENDED = "access_ended"
DROP_REASONS = (SEND_TIMEOUT, ACCESS_ENDED)


class ReadingEvent(BaseModel):
    """One tag's newest value."""

    tag: str
    ts: datetime
    value: float | None = Field(description="None only when the quality is bad: the device gave no value")
    quality: QualityName = "good"


class StreamEvent(BaseModel):
    """The `data` of one server-sent event, sent as JSON under the `event:` name `event_name`."""

    event_name: ClassVar[str]

    def as_event(self) -> Event:
        """The event's name with its data, as `frame` sends them."""
        return (self.event_name, self)


class ReadingsEvent(StreamEvent):
    """`event: readings`: tags whose newest value changed (sorted by tag)."""

    event_name: ClassVar[str] = "readings"
    machine_id: int
    readings: list[ReadingEvent]


class StateEvent(StreamEvent):
    """`event: state`: the machine entered `state` at `ts` (on connect: the current state and since when)."""

    event_name: ClassVar[str] = "state"
    machine_id: int
    state: MachineState
    ts: datetime


class StatusEvent(StreamEvent):
    """`event: status`: online / offline from the retained status topic, and the newest sample's time."""

    event_name: ClassVar[str] = "status"
    machine_id: int
    online: bool | None
    last_seen_at: datetime | None


Event = tuple[str, BaseModel]
# Every event the stream sends; the OpenAPI document describes each from its model (`event_schema`).
STREAM_EVENTS: tuple[type[StreamEvent], ...] = (ReadingsEvent, StateEvent, StatusEvent)


def event_schema(*, ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """The JSON schema of one server-sent event of the stream, as parsed from the wire: `{event, id, data}`.

    `data` is a JSON string whose schema is the event's model (`contentSchema`). OpenAPI 3.1 has no `itemSchema`
    yet: the `schema` of a `text/event-stream` response is read as that of one event (OpenAPI 3.2's `itemSchema`).
    """
    return {
        "type": "object",
        "title": "MachineStreamEvent",
        "description": "One server-sent event; the stream also sends `retry:` once and `: ping` comments, which are "
        "not events",
        "oneOf": [
            {
                "type": "object",
                "title": f"{model.event_name} event",
                "properties": {
                    "event": {"const": model.event_name},
                    "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Counts from 1 in each stream"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": ref_template.format(model=model.__name__)},
                    },
                },
                "required": ["event", "id", "data"],
            }
            for model in STREAM_EVENTS
        ],
    }


@dataclass(frozen=True)
class StreamConfig:
    """How one stream polls, beats and advises reconnects."""

    poll_interval_s: float
    heartbeat_s: float
    retry_ms: int


@dataclass
class Cursor:
    """What a stream has seen, so each poll sends only what is new."""

    machine_id: int
    latest: dict[str, datetime] = field(default_factory=dict)
    state: MachineState | None = None
    state_ts: datetime | None = None
    online: bool | None = None
    last_seen_at: datetime | None = None
    status_due: bool = False

    def status(self) -> StatusEvent:
        """The status as last observed."""
        self.status_due = False
        return StatusEvent(machine_id=self.machine_id, online=self.online, last_seen_at=self.last_seen_at)


@dataclass(frozen=True)
class StreamAccess:
    """Who opened a stream and with what, checked again at every heartbeat.

    `token` is the bearer token of a stream opened with the Authorization header (it ends when the token expires);
    a stream opened with a ticket has none, and lasts as long as its user keeps the same token version.
    """

    user_id: int
    token_version: int
    tokens: TokenService | None = None
    token: str | None = None

    async def allowed(self, session: AsyncSession) -> bool:
        """Whether the token (if any) is still valid and the user still exists, is active and has not been signed
        out everywhere since (password reset, deactivation, role change)."""
        if self.tokens is not None and self.token is not None:
            try:
                self.tokens.verify(self.token)
            except InvalidToken:
                return False
        user = await session.get(UserAccount, self.user_id)
        return user is not None and user.is_active and user.token_version == self.token_version


class StreamLease:
    """One open stream's place in the hub and in its user's share; releasing twice is harmless."""

    def __init__(self, hub: StreamHub, *, user_id: int):
        self._hub: StreamHub | None = hub
        self.user_id = user_id

    def release(self) -> None:
        """Give the place back."""
        if self._hub is not None:
            self._hub.give_back(user_id=self.user_id)
            self._hub = None


class StreamHub:
    """The streams of one API process: how many are open (bounded in all and per user), a count of the streams the
    server dropped (through `on_drop`, so the hub knows nothing of Prometheus), and one event that ends them all."""

    def __init__(
        self,
        *,
        max_clients: int,
        max_per_user: int,
        retry_after_s: float = 1.0,
        on_drop: Callable[[str], None] | None = None,
    ):
        self.max_clients = max_clients
        self.max_per_user = max_per_user
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.open = 0
        self.per_user: Counter[int] = Counter()
        self.stopping = asyncio.Event()
        self._on_drop = on_drop

    def acquire(self, *, user_id: int) -> StreamLease:
        """A place for one more stream of this user: RateLimited when the user has their maximum open already,
        Unavailable when the process serves its maximum."""
        if self.per_user[user_id] >= self.max_per_user:
            raise RateLimited(
                f"You have {self.max_per_user} streams open already; close one before opening another",
                retry_after_s=self.retry_after_s,
                code="too_many_streams_for_user",
            )
        if self.open >= self.max_clients:
            raise Unavailable(
                f"This server streams to {self.max_clients} clients already; try again later",
                code="too_many_streams",
            )
        self.open += 1
        self.per_user[user_id] += 1
        return StreamLease(self, user_id=user_id)

    def give_back(self, *, user_id: int) -> None:
        """Free one place of this user (`StreamLease.release` calls it once per lease)."""
        self.open -= 1
        self.per_user[user_id] -= 1
        if self.per_user[user_id] <= 0:
            del self.per_user[user_id]

    def dropped(self, reason: str) -> None:
        """Count a stream the server ended before its client did: `send_timeout`, `access_ended`."""
        if self._on_drop is not None:
            self._on_drop(reason)

    def close(self) -> None:
        """End every stream (each sends what it has and finishes); a stream opened after this ends after its
        snapshot."""
        self.stopping.set()


async def snapshot(session: AsyncSession, *, machine_id: int) -> tuple[list[Event], Cursor]:
    """The events a stream starts with, and the cursor its polls go on from (NotFound for an unknown machine)."""
    latest = await history.latest(session, machine_id=machine_id)
    machine = await get_machine(session, machine_id=machine_id)
    cursor = Cursor(machine_id=machine_id, online=machine.online, last_seen_at=machine.last_seen_at)
    events: list[Event] = []
    if latest.values:
        cursor.latest = {value.tag: value.ts for value in latest.values}
        readings = [
            ReadingEvent(tag=value.tag, ts=value.ts, value=value.value, quality=value.quality)
            for value in latest.values
        ]
        events.append(ReadingsEvent(machine_id=machine_id, readings=readings).as_event())
    if latest.state is not None:
        cursor.state = latest.state.state
        cursor.state_ts = await session.scalar(
            select(func.max(MachineStateChange.ts)).where(MachineStateChange.machine_id == machine_id)
        )
        events.append(StateEvent(machine_id=machine_id, state=latest.state.state, ts=latest.state.since).as_event())
    events.append(cursor.status().as_event())
    return events, cursor


async def poll(session: AsyncSession, *, cursor: Cursor) -> list[Event]:
    """What changed since the cursor (which moves on); NotFound when the machine is gone."""
    machine_id = cursor.machine_id
    of_machine = select(Machine.online, Machine.last_seen_at).where(Machine.id == machine_id)
    status = (await session.execute(of_machine)).first()
    if status is None:
        raise NotFound(f"Machine {machine_id} does not exist")
    events: list[Event] = []
    rows = await session.execute(
        select(MachineLatest.tag, MachineLatest.ts, MachineLatest.value, MachineLatest.quality)
        .where(MachineLatest.machine_id == machine_id)
        .order_by(MachineLatest.tag)
    )
    fresh = [
        ReadingEvent(tag=tag, ts=ts, value=value, quality=quality_name(quality))
        for tag, ts, value, quality in rows
        if _newer(ts, cursor.latest.get(tag))
    ]
    if fresh:
        cursor.latest.update((reading.tag, reading.ts) for reading in fresh)
        events.append(ReadingsEvent(machine_id=machine_id, readings=fresh).as_event())
    states = select(MachineStateChange.ts, MachineStateChange.state).where(MachineStateChange.machine_id == machine_id)
    if cursor.state_ts is not None:
        states = states.where(MachineStateChange.ts > cursor.state_ts)
    for ts, state in await session.execute(states.order_by(MachineStateChange.ts).limit(MAX_STATE_ROWS)):
        cursor.state_ts = ts
        if state != cursor.state:
            cursor.state = state
            events.append(StateEvent(machine_id=machine_id, state=state, ts=ts).as_event())
    online, last_seen_at = status
    if online != cursor.online:
        cursor.online, cursor.last_seen_at = online, last_seen_at
        events.append(cursor.status().as_event())
    elif last_seen_at != cursor.last_seen_at:
        cursor.last_seen_at = last_seen_at
        cursor.status_due = True
    return events


def _newer(ts: datetime, seen: datetime | None) -> bool:
    return seen is None or ts > seen


def frame(name: str, payload: BaseModel, *, event_id: int) -> str:
    """One server-sent event (JSON data holds no newline, so one `data:` line is enough)."""
    return f"id: {event_id}\nevent: {name}\ndata: {payload.model_dump_json()}\n\n"


async def machine_events(
    factory: async_sessionmaker[AsyncSession],
    *,
    cursor: Cursor,
    initial: Sequence[Event],
    config: StreamConfig,
    access: StreamAccess,
    stopping: asyncio.Event,
    on_drop: Callable[[str], None] | None = None,
) -> AsyncGenerator[str, None]:
    """The stream's text: reconnect advice and the snapshot, then new events and heartbeats until stopped."""
    ids = itertools.count(1)
    snapshot_text = "".join(frame(name, payload, event_id=next(ids)) for name, payload in initial)
    yield f"retry: {config.retry_ms}\n\n" + snapshot_text
    loop = asyncio.get_running_loop()
    next_poll = loop.time() + config.poll_interval_s
    next_beat = loop.time() + config.heartbeat_s
    failing = False
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(next_poll, next_beat) - loop.time())):
                await stopping.wait()
        if stopping.is_set():
            break
        events: list[Event] = []
        chunk = ""
        if loop.time() >= next_poll:
            # A poll that fails on a transient error (the database restarting, a dropped connection) is skipped
            # and tried again at the next interval: a browser's EventSource gives up for good on an error status.
            try:
                async with factory() as session:
                    events = await poll(session, cursor=cursor)
                if failing:
                    log.info("stream_poll_recovered", machine_id=cursor.machine_id)
                failing = False
            except TRANSIENT_DB_ERRORS as error:
                if not failing:
                    log.warning("stream_poll_failed", machine_id=cursor.machine_id, error=repr(error)[:300])
                failing = True
            except NotFound:
                log.info("stream_machine_gone", machine_id=cursor.machine_id)
                break
            next_poll = loop.time() + config.poll_interval_s
        if loop.time() >= next_beat:
            try:
                async with factory() as session:
                    allowed = await access.allowed(session)
            except TRANSIENT_DB_ERRORS:
                allowed = True  # the poll logs the outage; the check runs again at the next heartbeat
            if not allowed:
                log.info("stream_access_ended", machine_id=cursor.machine_id)
                if on_drop is not None:
                    on_drop(ACCESS_ENDED)
                break
            if cursor.status_due:
                events.append(cursor.status().as_event())
            chunk = PING
            next_beat += config.heartbeat_s
            if next_beat <= loop.time():  # fell behind (a slow poll): beat again a whole interval from now
                next_beat = loop.time() + config.heartbeat_s
        text = "".join(frame(name, payload, event_id=next(ids)) for name, payload in events) + chunk
        if text:
            yield text


class SendTimedOut(Exception):
    """The client did not take a chunk within the send timeout."""


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response holding a place in the hub until it is over, whatever ends it."""

    media_type = EVENT_STREAM

    def __init__(
        self,
        content: AsyncIterator[str],
        *,
        lease: StreamLease,
        send_timeout_s: float,
        on_drop: Callable[[str], None] | None = None,
    ):
        # no-cache: no proxy may store a live stream; X-Accel-Buffering: nginx must pass every event at once.
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.lease = lease
        self.send_timeout_s = send_timeout_s
        self.on_drop = on_drop
        # Should the response never be sent (an error after the route returned), the place comes back anyway.
        weakref.finalize(self, lease.release)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream until the generator ends, the client goes away or stops reading, or the app stops."""

        async def send_in_time(message: Message) -> None:
            # uvicorn's send waits for the transport to drain while its write buffer is over the high-water mark,
            # which is where a client that stopped reading leaves it.
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await send(message)
            except TimeoutError:
                raise SendTimedOut from None

        try:
            await super().__call__(scope, receive, send_in_time)
        except SendTimedOut:
            # The response stays unfinished: uvicorn logs that and closes the connection.
            log.warning("stream_dropped", reason=SEND_TIMEOUT, timeout_s=self.send_timeout_s)
            if self.on_drop is not None:
                self.on_drop(SEND_TIMEOUT)
        finally:
            self.lease.release()
