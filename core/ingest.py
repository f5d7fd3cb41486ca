"""The one write path for telemetry, used by the MQTT ingestor and by HTTP ingestion.

PostgreSQL: COPY (binary) into a per-connection temporary staging table, then `INSERT … ON CONFLICT DO NOTHING`
into `reading`; SQLite: `INSERT OR IGNORE`. Latest values, state changes and last-seen times are upserted in the
same transaction, so a batch is stored whole or not at all, and storing it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.contract import MachineState, Telemetry
from core.models import Base, DeadLetter, Machine, MachineLatest, MachineStateChange, Reading

MachineKey = tuple[str, str]  # (site, code)

_READING_COLUMNS = ("machine_id", "tag", "ts", "value")


@dataclass(frozen=True)
class RejectedMessage:
    """Something that broke the contract, to be kept in `dead_letter`."""

    source: str
    topic: str
    payload: bytes
    reason: str


@dataclass(frozen=True)
class StatusUpdate:
    """A machine's retained online/offline status."""

    site: str
    machine: str
    online: bool
    ts: datetime


@dataclass
class IngestBatch:
    """What one transaction stores."""

    telemetry: list[Telemetry] = field(default_factory=list)
    rejected: list[RejectedMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)

    @property
    def reading_count(self) -> int:
        """How many readings the batch offers."""
        return sum(len(message.readings) for message in self.telemetry)

    def __bool__(self) -> bool:
        return bool(self.telemetry or self.rejected or self.statuses)


@dataclass(frozen=True)
class WriteResult:
    """What a committed batch changed."""

    readings_offered: int
    readings_inserted: int
    states_inserted: int
    machines_registered: int
    dead_lettered: int
    machine_ids: dict[MachineKey, int] = field(repr=False, default_factory=dict)

    @property
    def duplicates(self) -> int:
        """Readings that were stored already (redelivery, retries, double publishing)."""
        return self.readings_offered - self.readings_inserted

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.readings_offered + other.readings_offered,
            self.readings_inserted + other.readings_inserted,
            self.states_inserted + other.states_inserted,
            self.machines_registered + other.machines_registered,
            self.dead_lettered + other.dead_lettered,
            self.machine_ids | other.machine_ids,
        )


class MachineRegistry:
    """Machine ids by (site, code), cached per process; unknown machines are registered when allowed."""

    def __init__(self, *, auto_register: bool):
        self.auto_register = auto_register
        self._ids: dict[MachineKey, int] = {}

    def remember(self, ids: dict[MachineKey, int]) -> None:
        """Keep ids learnt in a committed transaction."""
        self._ids.update(ids)

    async def resolve(self, conn: AsyncConnection, keys: set[MachineKey]) -> tuple[dict[MachineKey, int], int]:
        """Ids of these machines (registering the unknown ones if allowed) and how many were registered."""
        found = {key: self._ids[key] for key in keys if key in self._ids}
        missing = keys - found.keys()
        if not missing:
            return found, 0
        found |= await _lookup(conn, missing)
        new = missing - found.keys()
        if not new or not self.auto_register:
            return found, 0
        statement = _dialect_insert(conn, Machine).values(
            [{"site": site, "code": code, "name": code, "auto_registered": True} for site, code in sorted(new)]
        )
        await conn.execute(statement.on_conflict_do_nothing(index_elements=["site", "code"]))
        registered = await _lookup(conn, new)
        return found | registered, len(registered)


async def _lookup(conn: AsyncConnection, keys: set[MachineKey]) -> dict[MachineKey, int]:
    rows = await conn.execute(
        select(Machine.site, Machine.code, Machine.id).where(tuple_(Machine.site, Machine.code).in_(sorted(keys)))
    )
    return {(site, code): machine_id for site, code, machine_id in rows}


def _dialect_insert(conn: AsyncConnection, entity: type[Base]) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(entity)


async def write_batch(conn: AsyncConnection, batch: IngestBatch, *, registry: MachineRegistry) -> WriteResult:
    """Store a batch in the caller's transaction; after committing, the caller passes
    `result.machine_ids` to `registry.remember` (ids learnt in a rolled-back transaction must not be cached)."""
    keys = {(message.site, message.machine) for message in batch.telemetry}
    keys |= {(status.site, status.machine) for status in batch.statuses}
    ids, registered = await registry.resolve(conn, keys)
    rejected = list(batch.rejected)
    telemetry = []
    for message in batch.telemetry:
        if (message.site, message.machine) in ids:
            telemetry.append(message)
        else:
            rejected.append(
                RejectedMessage(
                    "ingest", f"{message.site}/{message.machine}", b"", "unknown machine (registration off)"
                )
            )
    rows = [
        (ids[(message.site, message.machine)], reading.tag, reading.ts, reading.value)
        for message in telemetry
        for reading in message.readings
    ]
    inserted = await _insert_readings(conn, rows)
    await _upsert_latest(conn, rows)
    states = await _insert_states(conn, ids, telemetry)
    await _touch_last_seen(conn, ids, telemetry)
    await _apply_statuses(conn, ids, batch.statuses)
    if rejected:
        await conn.execute(
            insert(DeadLetter),
            [{"source": r.source, "topic": r.topic, "payload": r.payload, "reason": r.reason[:2000]} for r in rejected],
        )
    return WriteResult(len(rows), inserted, states, registered, len(rejected), ids)


async def _insert_readings(conn: AsyncConnection, rows: Sequence[tuple[int, str, datetime, float]]) -> int:
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return await _copy_readings(conn, rows)
    before = (await conn.execute(text("SELECT total_changes()"))).scalar_one()
    await conn.execute(
        sqlite.insert(Reading).prefix_with("OR IGNORE"),
        [dict(zip(_READING_COLUMNS, row, strict=True)) for row in rows],
    )
    after = (await conn.execute(text("SELECT total_changes()"))).scalar_one()
    return int(after - before)


async def _copy_readings(conn: AsyncConnection, rows: Sequence[tuple[int, str, datetime, float]]) -> int:
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor() as cursor:
        # The staging table lives as long as the connection and is emptied by every commit.
        await cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS reading_staging "
            "(machine_id integer, tag varchar(64), ts timestamptz, value double precision) ON COMMIT DELETE ROWS"
        )
        async with cursor.copy("COPY reading_staging (machine_id, tag, ts, value) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "varchar", "timestamptz", "float8"])
            for row in rows:
                await copy.write_row(row)
        await cursor.execute(
            "INSERT INTO reading (machine_id, tag, ts, value) SELECT machine_id, tag, ts, value FROM reading_staging "
            "ON CONFLICT DO NOTHING"
        )
        inserted: int = cursor.rowcount
        await cursor.execute("TRUNCATE reading_staging")
    return inserted


async def _upsert_latest(conn: AsyncConnection, rows: Iterable[tuple[int, str, datetime, float]]) -> None:
    latest: dict[tuple[int, str], tuple[datetime, float]] = {}
    for machine_id, tag, ts, value in rows:
        current = latest.get((machine_id, tag))
        if current is None or ts > current[0]:
            latest[(machine_id, tag)] = (ts, value)
    if not latest:
        return
    statement = _dialect_insert(conn, MachineLatest)
    upsert = statement.on_conflict_do_update(
        index_elements=["machine_id", "tag"],
        set_={"ts": statement.excluded.ts, "value": statement.excluded.value},
        where=MachineLatest.ts < statement.excluded.ts,
    )
    await conn.execute(
        upsert,
        [
            {"machine_id": machine_id, "tag": tag, "ts": ts, "value": value}
            for (machine_id, tag), (ts, value) in sorted(latest.items())
        ],
    )


async def _insert_states(conn: AsyncConnection, ids: dict[MachineKey, int], telemetry: Sequence[Telemetry]) -> int:
    """Keep a state sample when it differs from the machine's state just before it."""
    samples: dict[int, list[tuple[datetime, MachineState]]] = {}
    for message in telemetry:
        for change in message.states:
            samples.setdefault(ids[(message.site, message.machine)], []).append((change.ts, change.state))
    if not samples:
        return 0
    rows = []
    for machine_id, changes in samples.items():
        changes.sort()
        previous = await conn.scalar(
            select(MachineStateChange.state)
            .where(MachineStateChange.machine_id == machine_id, MachineStateChange.ts < changes[0][0])
            .order_by(MachineStateChange.ts.desc())
            .limit(1)
        )
        for ts, state in changes:
            if state != previous:
                rows.append({"machine_id": machine_id, "ts": ts, "state": state})
            previous = state
    if not rows:
        return 0
    statement = _dialect_insert(conn, MachineStateChange).on_conflict_do_nothing()
    result = await conn.execute(statement.returning(MachineStateChange.ts), rows)
    return len(result.all())


async def _touch_last_seen(conn: AsyncConnection, ids: dict[MachineKey, int], telemetry: Sequence[Telemetry]) -> None:
    newest: dict[int, datetime] = {}
    for message in telemetry:
        stamps = [reading.ts for reading in message.readings] + [state.ts for state in message.states]
        if stamps:
            machine_id = ids[(message.site, message.machine)]
            newest[machine_id] = max(stamps + ([newest[machine_id]] if machine_id in newest else []))
    for machine_id, seen in sorted(newest.items()):
        await conn.execute(
            update(Machine)
            .where(Machine.id == machine_id)
            .where(Machine.last_seen_at.is_(None) | (Machine.last_seen_at < seen))
            .values(last_seen_at=seen)
        )


async def _apply_statuses(conn: AsyncConnection, ids: dict[MachineKey, int], statuses: Sequence[StatusUpdate]) -> None:
    for status in sorted(statuses, key=lambda s: s.ts):
        machine_id = ids.get((status.site, status.machine))
        if machine_id is None:
            continue
        await conn.execute(
            update(Machine)
            .where(Machine.id == machine_id)
            .where(Machine.status_changed_at.is_(None) | (Machine.status_changed_at <= status.ts))
            .values(online=status.online, status_changed_at=status.ts)
        )
