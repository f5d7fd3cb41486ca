"""The one write path for telemetry, used by the MQTT ingestor and by HTTP ingestion.

PostgreSQL: COPY (binary) into a per-connection temporary staging table, then `INSERT … ON CONFLICT DO NOTHING`
into `reading`; SQLite: `INSERT OR IGNORE`. Latest values, state changes and last-seen times are upserted in the
same transaction, so a batch is stored whole or not at all, and storing it twice changes nothing.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.commands import CommandResultPayload, CommandStatus
from core.contract import (
    GatewayBacklog,
    MachineState,
    QualityLevel,
    ReadingColumns,
    Telemetry,
    quality_name,
    telemetry_topic,
)
from core.logging import get_logger
from core.lru import LruCache
from core.models import (
    Base,
    DeadLetter,
    Gateway,
    Machine,
    MachineCommand,
    MachineLatest,
    MachineStateChange,
    Reading,
    TagRange,
)

log = get_logger("shopfloor.ingest")

MachineKey = tuple[str, str]  # (site, code)

_READING_COLUMNS = ("machine_id", "tag", "ts", "value", "quality")
ReadingRow = tuple[int, str, datetime, float | None, int | None]  # machine id, tag, ts, value, quality (None: good)
# Conflicts (the same machine, tag and time offered again with another value) kept as dead letters per batch, at most.
MAX_CONFLICTS_KEPT = 100

# Defaults of DEAD_LETTER_MAX_PAYLOAD_BYTES and of the machine cache (the ingestor's settings override the first).
DEAD_LETTER_MAX_PAYLOAD_BYTES = 4096
MACHINE_CACHE_SIZE = 10_000
# The first key of the PostgreSQL advisory locks that serialise one site's auto-registrations ("SF"; the second is
# the site's hash).
REGISTRATION_LOCK_SPACE = 0x5346
_REASON_CHARS = 2000
ARCHIVED_REASON = "machine archived (DELETE /machines/{id}): nothing more is stored for it"
_TOPIC_CHARS = 1024
# NUL is refused by PostgreSQL text; the other controls (and lone surrogates, which UTF-8 cannot encode) make
# reasons unreadable or unstorable. All come from device input, so they are escaped, never stored raw.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def plain_text(value: str, limit: int) -> str:
    """`value` as text both databases accept: control characters escaped as `\\uXXXX`, at most `limit` chars."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", value)[:limit]


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


@dataclass(frozen=True)
class GatewayStatus:
    """A gateway's own retained online/offline message as received (`ts`: when it arrived), with its buffer's
    backlog when it says."""

    site: str
    gateway_id: str
    online: bool
    ts: datetime
    backlog: GatewayBacklog | None = None


@dataclass(frozen=True)
class CommandResult:
    """A gateway's answer to a command, for the command's row; the topic names the machine it came for."""

    site: str
    machine: str
    result: CommandResultPayload
    topic: str
    payload: bytes


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Binary COPY (PostgreSQL docs, "COPY", binary format): a signature, flags and header extension, rows, a trailer.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_TS_FIELD = struct.Struct(">iq").pack  # length 8, microseconds since 2000-01-01 UTC
_GOOD_VALUE = struct.Struct(">idi").pack  # length 8, the value; quality NULL (good) as length -1
_VALUE = struct.Struct(">id").pack
_QUALITY = struct.Struct(">ih").pack


Latest = dict[str, tuple[datetime, float | None, int | None]]  # tag -> its newest time, value and quality


@dataclass(frozen=True)
class CopyRows:
    """One message's readings as binary COPY rows of the staging table, made for one machine id, and the newest
    reading of each of its tags (for `machine_latest`)."""

    machine_id: int
    data: bytes
    rows: int
    not_good: int
    latest: Latest


def encode_copy(machine_id: int, message: Telemetry) -> CopyRows:
    """A message's readings as rows of `COPY reading_staging_q … (FORMAT BINARY)` (no signature, no trailer).

    Made in one pass without an object per value: the row head (field count, machine id, tag) once per tag, the
    time once per sample. About 0.2 µs per reading, where psycopg's awaited `write_row` took 1 µs or more.
    """
    prefix = struct.pack(">hii", 5, 4, machine_id)
    heads: dict[str, bytes] = {}
    out = bytearray()
    not_good = 0
    readings = message.readings
    if isinstance(readings, ReadingColumns):
        for sample in readings.samples:
            ts = _TS_FIELD(8, (sample.ts - _PG_EPOCH) // _MICROSECOND)
            qualities = sample.qualities
            for tag, value in sample.values.items():
                head = heads.get(tag)
                if head is None:
                    head = heads[tag] = prefix + _varchar(tag)
                out += head
                out += ts
                quality = qualities.get(tag) if qualities is not None else None
                if quality is None:
                    out += _GOOD_VALUE(8, value, -1)
                else:
                    out += _NULL if value is None else _VALUE(8, value)
                    out += _QUALITY(2, int(quality.level))
                    not_good += 1
        return CopyRows(machine_id, bytes(out), readings.total, not_good, _latest_of(readings))
    latest: Latest = {}
    for reading in readings:
        level = None if reading.quality is None else int(reading.quality.level)
        newest = latest.get(reading.tag)
        if newest is None or reading.ts > newest[0]:
            latest[reading.tag] = (reading.ts, reading.value, level)
        head = heads.get(reading.tag)
        if head is None:
            head = heads[reading.tag] = prefix + _varchar(reading.tag)
        out += head
        out += _TS_FIELD(8, (reading.ts - _PG_EPOCH) // _MICROSECOND)
        out += _NULL if reading.value is None else _VALUE(8, reading.value)
        if reading.quality is None:
            out += _NULL
        else:
            out += _QUALITY(2, int(reading.quality.level))
            not_good += 1
    return CopyRows(machine_id, bytes(out), len(readings), not_good, latest)


def _latest_of(readings: ReadingColumns) -> Latest:
    """The newest reading of each tag: samples newest first, each adding only tags not seen yet (usually the first
    sample holds every tag, and the rest add nothing: a set difference each, no Python per value)."""
    latest: Latest = {}
    for sample in sorted(readings.samples, key=lambda sample: sample.ts, reverse=True):
        new = sample.values.keys() - latest.keys()
        if new:
            qualities = sample.qualities or {}
            for tag in new:
                quality = qualities.get(tag)
                latest[tag] = (sample.ts, sample.values[tag], None if quality is None else int(quality.level))
    return latest


def _copy_row(machine_id: int, tag: str, ts: datetime, value: float | None, quality: int | None) -> bytes:
    """One row of the staging tables' shape, in binary COPY format."""
    return b"".join(
        (
            struct.pack(">hii", 5, 4, machine_id),
            _varchar(tag),
            _TS_FIELD(8, (ts - _PG_EPOCH) // _MICROSECOND),
            _NULL if value is None else _VALUE(8, value),
            _NULL if quality is None else _QUALITY(2, quality),
        )
    )


def _varchar(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack(">i", len(encoded)) + encoded


@dataclass
class IngestBatch:
    """What one transaction stores."""

    telemetry: list[Telemetry] = field(default_factory=list)
    rejected: list[RejectedMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    gateways: list[GatewayStatus] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    # COPY rows made ahead of the transaction (see `encode_copy`), by `id()` of the telemetry message they are of:
    # used when the machine id they were made with is still the one the transaction resolves.
    copy_rows: dict[int, CopyRows] = field(default_factory=dict)

    @property
    def reading_count(self) -> int:
        """How many readings the batch offers."""
        return sum(len(message.readings) for message in self.telemetry)

    def __bool__(self) -> bool:
        return bool(self.telemetry or self.rejected or self.statuses or self.gateways or self.results)


@dataclass(frozen=True)
class WriteResult:
    """What a committed batch changed."""

    readings_offered: int
    readings_inserted: int
    states_inserted: int
    machines_registered: int
    dead_lettered: int
    machine_ids: dict[MachineKey, int] = field(repr=False, default_factory=dict)
    statuses_ignored: int = 0
    conflicts: int = 0
    not_good: int = 0
    out_of_range: int = 0  # good values outside their registered range, stored as bad (counted in not_good too)
    command_results: int = 0  # commands whose row took a gateway's answer

    @property
    def duplicates(self) -> int:
        """Readings that were stored already with the same value and quality (redelivery, retries, double
        publishing); a different value for a stored (machine, tag, time) is a conflict, not a duplicate."""
        return self.readings_offered - self.readings_inserted - self.conflicts

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.readings_offered + other.readings_offered,
            self.readings_inserted + other.readings_inserted,
            self.states_inserted + other.states_inserted,
            self.machines_registered + other.machines_registered,
            self.dead_lettered + other.dead_lettered,
            self.machine_ids | other.machine_ids,
            self.statuses_ignored + other.statuses_ignored,
            self.conflicts + other.conflicts,
            self.not_good + other.not_good,
            self.out_of_range + other.out_of_range,
            self.command_results + other.command_results,
        )


@dataclass(frozen=True)
class Resolution:
    """Machine ids found or registered, and the machines refused with the reason."""

    ids: dict[MachineKey, int]
    registered: int
    refused: dict[MachineKey, str]


class MachineRegistry:
    """Machine ids by (site, code), cached per process (LRU); unknown machines are registered when allowed.

    Registration is capped per site per hour (counted in the database, so restarts and other ingestors count too):
    one device login must not be able to fill the machine table.
    """

    def __init__(
        self,
        *,
        auto_register: bool,
        max_per_site_per_hour: int | None = None,
        cache_size: int = MACHINE_CACHE_SIZE,
    ):
        self.auto_register = auto_register
        self.max_per_site_per_hour = max_per_site_per_hour
        self.cache: LruCache[MachineKey, int] = LruCache(cache_size)
        # The newest status of each machine not known yet: a gateway announces a device online when it first reads
        # it, often just before the telemetry that registers the machine; the status is applied once it exists.
        self.pending_statuses: LruCache[MachineKey, StatusUpdate] = LruCache(cache_size)

    def remember(self, ids: dict[MachineKey, int]) -> None:
        """Keep ids learnt in a committed transaction (their held statuses were applied in it)."""
        for key, machine_id in ids.items():
            self.cache.put(key, machine_id)
            self.pending_statuses.pop(key)

    def hold(self, status: StatusUpdate) -> None:
        """Keep the status of a machine not known yet (the newest one per machine, bounded)."""
        key = (status.site, status.machine)
        held = self.pending_statuses.peek(key)
        if held is None or held.ts <= status.ts:
            self.pending_statuses.put(key, status)

    async def resolve(
        self, conn: AsyncConnection, keys: set[MachineKey], *, register: set[MachineKey] | None = None
    ) -> Resolution:
        """Ids of these machines; unknown ones among `register` (default: all) are registered if allowed.

        Archived machines are refused, never registered again; a cached id is checked too, since another process
        (the API's DELETE /machines/{id}) may have archived it since.
        """
        found: dict[MachineKey, int] = {}
        for key in keys:
            cached = self.cache.get(key)
            if cached is not None:
                found[key] = cached
        archived = await _archived(conn, found)
        for key in archived:
            del found[key]
        missing = keys - found.keys() - archived
        if missing:
            looked_up, also_archived = await _lookup_active(conn, missing)
            found |= looked_up
            archived |= also_archived
        refused = dict.fromkeys(archived, ARCHIVED_REASON)
        new = (missing - found.keys() - archived) & (keys if register is None else register)
        if not new:
            return Resolution(found, 0, refused)
        if not self.auto_register:
            return Resolution(found, 0, refused | dict.fromkeys(new, "unknown machine (registration off)"))
        accepted, over_cap = await self._within_cap(conn, new)
        refused |= over_cap
        if not accepted:
            return Resolution(found, 0, refused)
        statement = _dialect_insert(conn, Machine).values(
            [{"site": site, "code": code, "name": code, "auto_registered": True} for site, code in sorted(accepted)]
        )
        await conn.execute(statement.on_conflict_do_nothing(index_elements=["site", "code"]))
        registered = await _lookup(conn, accepted)
        return Resolution(found | registered, len(registered), refused)

    async def _within_cap(
        self, conn: AsyncConnection, new: set[MachineKey]
    ) -> tuple[set[MachineKey], dict[MachineKey, str]]:
        cap = self.max_per_site_per_hour
        if cap is None:
            return new, {}
        accepted: set[MachineKey] = set()
        refused: dict[MachineKey, str] = {}
        since = utcnow() - timedelta(hours=1)
        for site in sorted({site for site, _ in new}):
            if conn.dialect.name == "postgresql":
                # Writers of several ingestors (or INGEST_WRITERS > 1) register at once: one site's count-then-insert
                # runs under a lock held to the commit, so the next transaction counts what this one added. Sites
                # are locked in order, so two batches never wait for each other's sites crosswise.
                # The two-key form: a key space of its own (the login throttle's one-key locks never collide with it).
                await conn.execute(select(func.pg_advisory_xact_lock(REGISTRATION_LOCK_SPACE, func.hashtext(site))))
            recent = await conn.scalar(
                select(func.count())
                .select_from(Machine)
                .where(Machine.site == site, Machine.auto_registered.is_(True), Machine.created_at >= since)
            )
            room = max(0, cap - int(recent or 0))
            ordered = sorted(key for key in new if key[0] == site)
            accepted.update(ordered[:room])
            reason = (
                f"machine registration refused: site {site} reached {cap} auto-registered machines in the last hour "
                "(INGEST_AUTO_REGISTER_MAX_PER_SITE_PER_HOUR)"
            )
            refused.update(dict.fromkeys(ordered[room:], reason))
        return accepted, refused


async def _archived(conn: AsyncConnection, ids: dict[MachineKey, int]) -> set[MachineKey]:
    if not ids:
        return set()
    rows = await conn.execute(
        select(Machine.site, Machine.code).where(Machine.id.in_(sorted(ids.values())), Machine.archived_at.is_not(None))
    )
    return {(site, code) for site, code in rows}


async def _lookup_active(conn: AsyncConnection, keys: set[MachineKey]) -> tuple[dict[MachineKey, int], set[MachineKey]]:
    rows = await conn.execute(
        select(Machine.site, Machine.code, Machine.id, Machine.archived_at).where(
            tuple_(Machine.site, Machine.code).in_(sorted(keys))
        )
    )
    active: dict[MachineKey, int] = {}
    archived: set[MachineKey] = set()
    for site, code, machine_id, archived_at in rows:
        if archived_at is None:
            active[(site, code)] = machine_id
        else:
            archived.add((site, code))
    return active, archived


async def _lookup(conn: AsyncConnection, keys: set[MachineKey]) -> dict[MachineKey, int]:
    rows = await conn.execute(
        select(Machine.site, Machine.code, Machine.id).where(tuple_(Machine.site, Machine.code).in_(sorted(keys)))
    )
    return {(site, code): machine_id for site, code, machine_id in rows}


def _dialect_insert(conn: AsyncConnection, entity: type[Base]) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(entity)


def dead_letter_row(rejected: RejectedMessage, *, max_payload_bytes: int) -> dict[str, Any]:
    """The `dead_letter` row of a rejected message: plain-text topic and reason, payload cut to the limit."""
    return {
        "source": rejected.source,
        "topic": plain_text(rejected.topic, _TOPIC_CHARS),
        "payload": rejected.payload[:max_payload_bytes],
        "payload_size": len(rejected.payload),
        "payload_sha256": hashlib.sha256(rejected.payload).hexdigest(),
        "reason": plain_text(rejected.reason, _REASON_CHARS),
    }


async def write_batch(
    conn: AsyncConnection,
    batch: IngestBatch,
    *,
    registry: MachineRegistry,
    dead_letter_max_payload_bytes: int = DEAD_LETTER_MAX_PAYLOAD_BYTES,
) -> WriteResult:
    """Store a batch in the caller's transaction; after committing, the caller passes
    `result.machine_ids` to `registry.remember` (ids learnt in a rolled-back transaction must not be cached).

    Only telemetry registers machines: a (retained) status of an unknown machine creates nothing; it is counted as
    ignored and held (bounded) until telemetry registers the machine, then applied in that transaction.
    """
    registering = {(message.site, message.machine) for message in batch.telemetry}
    keys = registering | {(status.site, status.machine) for status in batch.statuses}
    resolution = await registry.resolve(conn, keys, register=registering)
    ids = resolution.ids
    rejected = list(batch.rejected)
    telemetry = []
    for message in batch.telemetry:
        key = (message.site, message.machine)
        if key in ids:
            telemetry.append(message)
        else:
            reason = resolution.refused.get(key, "unknown machine")
            rejected.append(RejectedMessage("ingest", telemetry_topic(*key), b"", reason))
    if conn.dialect.name == "postgresql":
        staged = await _stage_readings(conn, telemetry, ids, batch.copy_rows)
        offered, inserted, conflicts = staged.offered, staged.inserted, staged.conflicts
        out_of_range, not_good = staged.out_of_range, staged.not_good
    else:
        rows: list[ReadingRow] = [
            (
                ids[(message.site, message.machine)],
                reading.tag,
                reading.ts,
                reading.value,
                None if reading.quality is None else int(reading.quality.level),
            )
            for message in telemetry
            for reading in message.readings
        ]
        rows, out_of_range = await _check_ranges(conn, rows)
        inserted = await _insert_readings(conn, rows)
        conflicts = await _conflicts(conn, rows) if inserted < len(rows) else []
        await _upsert_latest(conn, rows)
        offered, not_good = len(rows), sum(1 for row in rows if row[4] is not None)
    rejected.extend(_conflict_letters(conflicts, ids))
    states = await _insert_states(conn, ids, telemetry)
    await _touch_last_seen(conn, ids, telemetry)
    held = [status for key in ids if (status := registry.pending_statuses.peek(key)) is not None]
    ignored = await _apply_statuses(conn, ids, [*batch.statuses, *held])
    for status in batch.statuses:
        if (status.site, status.machine) not in ids:
            registry.hold(status)
    await _upsert_gateways(conn, batch.gateways)
    recorded, refused_results = await _record_command_results(conn, batch.results)
    rejected.extend(refused_results)
    if rejected:
        await conn.execute(
            insert(DeadLetter),
            [dead_letter_row(r, max_payload_bytes=dead_letter_max_payload_bytes) for r in rejected],
        )
    return WriteResult(
        offered,
        inserted,
        states,
        resolution.registered,
        len(rejected),
        ids,
        statuses_ignored=ignored,
        conflicts=len(conflicts),
        not_good=not_good,
        out_of_range=out_of_range,
        command_results=recorded,
    )


async def _ranges(conn: AsyncConnection, machine_ids: list[int]) -> dict[tuple[int, str], tuple[float, float]]:
    """The registered ranges of these machines' tags."""
    if not machine_ids:
        return {}
    found = await conn.execute(
        select(TagRange.machine_id, TagRange.tag, TagRange.low, TagRange.high).where(
            TagRange.machine_id.in_(machine_ids)
        )
    )
    return {(machine_id, tag): (low, high) for machine_id, tag, low, high in found}


async def _check_ranges(conn: AsyncConnection, rows: list[ReadingRow]) -> tuple[list[ReadingRow], int]:
    """Rows with a good value outside their tag's registered range become bad (the value is kept); how many."""
    ranges = await _ranges(conn, sorted({row[0] for row in rows}))
    if not ranges:
        return rows, 0
    checked: list[ReadingRow] = []
    flagged = 0
    for row in rows:
        machine_id, tag, ts, value, quality = row
        bounds = ranges.get((machine_id, tag))
        if bounds is not None and value is not None and quality is None and not bounds[0] <= value <= bounds[1]:
            checked.append((machine_id, tag, ts, value, int(QualityLevel.BAD)))
            flagged += 1
        else:
            checked.append(row)
    return checked, flagged


@dataclass(frozen=True)
class Conflict:
    """A reading offered for a (machine, tag, time) that holds another value or quality already: the first stays."""

    machine_id: int
    tag: str
    ts: datetime
    stored: tuple[float | None, int | None]
    offered: tuple[float | None, int | None]


async def _conflicts(conn: AsyncConnection, rows: Sequence[ReadingRow]) -> list[Conflict]:
    """The offered rows whose key holds a different value or quality once the batch is in (run only when some rows
    were not inserted, so a batch without repeats pays nothing)."""
    stored: dict[tuple[int, str, datetime], tuple[float | None, int | None]] = {}
    keys = sorted({(machine_id, tag, ts) for machine_id, tag, ts, _, _ in rows})
    keys.sort(key=lambda key: key[2])  # chunks of close times: each query's time range excludes most chunks
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found = await conn.execute(
            select(Reading.machine_id, Reading.tag, Reading.ts, Reading.value, Reading.quality).where(
                Reading.ts >= chunk[0][2],
                Reading.ts <= chunk[-1][2],
                tuple_(Reading.machine_id, Reading.tag, Reading.ts).in_(chunk),
            )
        )
        for machine_id, tag, ts, value, quality in found:
            stored[(machine_id, tag, _utc(ts))] = (value, quality)
    conflicts = []
    for machine_id, tag, ts, value, quality in rows:
        kept = stored.get((machine_id, tag, _utc(ts)))
        if kept is not None and kept != (value, quality):
            conflicts.append(Conflict(machine_id, tag, ts, kept, (value, quality)))
    return conflicts


def _utc(moment: datetime) -> datetime:
    # SQLite gives naive UTC datetimes back: keys compare as aware UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _conflict_letters(conflicts: Sequence[Conflict], ids: dict[MachineKey, int]) -> list[RejectedMessage]:
    """Conflicts as dead letters (source `conflict`), at most MAX_CONFLICTS_KEPT per batch (all are counted)."""
    keys = {machine_id: key for key, machine_id in ids.items()}
    letters = []
    for conflict in conflicts[:MAX_CONFLICTS_KEPT]:
        offered = {"ts": conflict.ts.isoformat(), "tag": conflict.tag, "value": conflict.offered[0]}
        if conflict.offered[1] is not None:
            offered["quality"] = conflict.offered[1]
        reason = (
            f"conflict: {conflict.tag} at {conflict.ts.isoformat()} holds {conflict.stored[0]!r}"
            f" (quality {quality_name(conflict.stored[1])}); offered {conflict.offered[0]!r}"
            f" (quality {quality_name(conflict.offered[1])}): the first value stays"
        )
        letters.append(
            RejectedMessage("conflict", telemetry_topic(*keys[conflict.machine_id]), orjson.dumps(offered), reason)
        )
    return letters


async def purge_dead_letters(conn: AsyncConnection, *, before: datetime) -> int:
    """Delete dead letters received before `before` (DEAD_LETTER_RETENTION_DAYS); how many went."""
    result = await conn.execute(delete(DeadLetter).where(DeadLetter.received_at < before))
    return int(result.rowcount or 0)


async def _insert_readings(conn: AsyncConnection, rows: Sequence[ReadingRow]) -> int:
    if not rows:
        return 0
    before = (await conn.execute(text("SELECT total_changes()"))).scalar_one()
    await conn.execute(
        sqlite.insert(Reading).prefix_with("OR IGNORE"),
        [dict(zip(_READING_COLUMNS, row, strict=True)) for row in rows],
    )
    after = (await conn.execute(text("SELECT total_changes()"))).scalar_one()
    return int(after - before)


STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS reading_staging_q (machine_id integer, tag varchar(64), ts timestamptz, "
    "value double precision, quality smallint) ON COMMIT DELETE ROWS"
)
LATEST_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS machine_latest_staging (machine_id integer, tag varchar(64), "
    "ts timestamptz, value double precision, quality smallint) ON COMMIT DELETE ROWS"
)
# A good value outside its tag's registered range is stored as bad (the value is kept); run only when the batch's
# machines have ranges.
_STAGING_RANGES = (
    "UPDATE reading_staging_q s SET quality = 2 FROM machine_tag_range r "
    "WHERE r.machine_id = s.machine_id AND r.tag = s.tag AND s.quality IS NULL AND s.value IS NOT NULL "
    "AND NOT (s.value BETWEEN r.low AND r.high)"
)
# Offered rows whose key now holds another value or quality: the first stays (run only when some were not inserted).
_STAGING_CONFLICTS = (
    "SELECT s.machine_id, s.tag, s.ts, r.value, r.quality, s.value, s.quality FROM reading_staging_q s "
    "JOIN reading r ON r.machine_id = s.machine_id AND r.tag = s.tag AND r.ts = s.ts "
    "WHERE r.value IS DISTINCT FROM s.value OR r.quality IS DISTINCT FROM s.quality "
    "ORDER BY s.ts, s.machine_id, s.tag"
)
# The newest reading per tag (found while decoding, one row per tag) moves `machine_latest` forward, never back;
# in key order, so concurrent batches of several ingestors wait for each other rather than deadlock. (Measured:
# `DISTINCT ON` over the whole staging table sorted every row, ~15 % of a 50,000-reading transaction.)
_LATEST_UPSERT = (
    "INSERT INTO machine_latest (machine_id, tag, ts, value, quality) "
    "SELECT machine_id, tag, ts, value, quality FROM machine_latest_staging ORDER BY machine_id, tag "
    "ON CONFLICT (machine_id, tag) DO UPDATE SET ts = excluded.ts, value = excluded.value, "
    "quality = excluded.quality WHERE machine_latest.ts < excluded.ts"
)


@dataclass
class Staged:
    """What the staging table gave: rows offered, inserted, flagged out of range, not good, and the conflicts."""

    offered: int = 0
    inserted: int = 0
    out_of_range: int = 0
    not_good: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


async def _stage_readings(
    conn: AsyncConnection, telemetry: Sequence[Telemetry], ids: dict[MachineKey, int], made: dict[int, CopyRows]
) -> Staged:
    """PostgreSQL: the batch's rows in one binary COPY into the staging table; ranges, the insert into `reading`,
    conflicts and latest values are then statements on that table (no Python per row)."""
    parts = []
    staged = Staged()
    latest: dict[tuple[int, str], tuple[datetime, float | None, int | None]] = {}
    for message in telemetry:
        machine_id = ids[(message.site, message.machine)]
        rows = made.get(id(message))
        if rows is None or rows.machine_id != machine_id:
            rows = encode_copy(machine_id, message)
        parts.append(rows.data)
        staged.offered += rows.rows
        staged.not_good += rows.not_good
        for tag, newest in rows.latest.items():
            current = latest.get((machine_id, tag))
            if current is None or newest[0] > current[0]:
                latest[(machine_id, tag)] = newest
    if not staged.offered:
        return staged
    ranges = await _ranges(conn, sorted({machine_id for machine_id, _ in latest}))
    for key, (ts, value, quality) in latest.items():
        bounds = ranges.get(key)
        if bounds is not None and value is not None and quality is None and not bounds[0] <= value <= bounds[1]:
            latest[key] = (ts, value, int(QualityLevel.BAD))
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor() as cursor:
        # The staging tables live as long as the connection and are emptied by every commit (the readings' name is
        # new with the quality column, so a connection pooled across an upgrade never meets the old shape).
        await cursor.execute(STAGING_DDL)
        async with cursor.copy(
            "COPY reading_staging_q (machine_id, tag, ts, value, quality) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy.write(b"".join((COPY_SIGNATURE, *parts, COPY_TRAILER)))
        if ranges:
            await cursor.execute(_STAGING_RANGES)
            staged.out_of_range = max(cursor.rowcount, 0)
            staged.not_good += staged.out_of_range
        await cursor.execute(
            "INSERT INTO reading (machine_id, tag, ts, value, quality) "
            "SELECT machine_id, tag, ts, value, quality FROM reading_staging_q ON CONFLICT DO NOTHING"
        )
        staged.inserted = cursor.rowcount
        if staged.inserted < staged.offered:
            await cursor.execute(_STAGING_CONFLICTS)
            staged.conflicts = [
                Conflict(machine_id, tag, ts, (stored_value, stored_quality), (value, quality))
                for machine_id, tag, ts, stored_value, stored_quality, value, quality in await cursor.fetchall()
            ]
        await cursor.execute(LATEST_DDL)
        async with cursor.copy(
            "COPY machine_latest_staging (machine_id, tag, ts, value, quality) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            rows_of_latest = (_copy_row(machine_id, tag, *newest) for (machine_id, tag), newest in latest.items())
            await copy.write(b"".join((COPY_SIGNATURE, *rows_of_latest, COPY_TRAILER)))
        await cursor.execute(_LATEST_UPSERT)
        await cursor.execute("TRUNCATE reading_staging_q, machine_latest_staging")
    return staged


async def _upsert_latest(conn: AsyncConnection, rows: Iterable[ReadingRow]) -> None:
    latest: dict[tuple[int, str], tuple[datetime, float | None, int | None]] = {}
    for machine_id, tag, ts, value, quality in rows:
        current = latest.get((machine_id, tag))
        if current is None or ts > current[0]:
            latest[(machine_id, tag)] = (ts, value, quality)
    if not latest:
        return
    statement = _dialect_insert(conn, MachineLatest)
    upsert = statement.on_conflict_do_update(
        index_elements=["machine_id", "tag"],
        set_={"ts": statement.excluded.ts, "value": statement.excluded.value, "quality": statement.excluded.quality},
        where=MachineLatest.ts < statement.excluded.ts,
    )
    await conn.execute(
        upsert,
        [
            {"machine_id": machine_id, "tag": tag, "ts": ts, "value": value, "quality": quality}
            for (machine_id, tag), (ts, value, quality) in sorted(latest.items())
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


def _newest(message: Telemetry) -> datetime | None:
    """The newest time a message speaks of (its readings and state reports)."""
    readings = message.readings
    if isinstance(readings, ReadingColumns):
        stamps = [sample.ts for sample in readings.samples]
    else:
        stamps = [reading.ts for reading in readings]
    stamps += [state.ts for state in message.states]
    return max(stamps) if stamps else None


async def _touch_last_seen(conn: AsyncConnection, ids: dict[MachineKey, int], telemetry: Sequence[Telemetry]) -> None:
    """One statement for the whole batch (executemany), in machine order: concurrent batches wait, never deadlock."""
    newest: dict[int, datetime] = {}
    for message in telemetry:
        seen = _newest(message)
        if seen is not None:
            machine_id = ids[(message.site, message.machine)]
            if machine_id not in newest or newest[machine_id] < seen:
                newest[machine_id] = seen
    if not newest:
        return
    await conn.execute(
        update(Machine)
        .where(Machine.id == bindparam("machine_id"))
        .where(Machine.last_seen_at.is_(None) | (Machine.last_seen_at < bindparam("seen")))
        .values(last_seen_at=bindparam("seen")),
        [{"machine_id": machine_id, "seen": seen} for machine_id, seen in sorted(newest.items())],
    )


async def _apply_statuses(conn: AsyncConnection, ids: dict[MachineKey, int], statuses: Sequence[StatusUpdate]) -> int:
    ignored = 0
    for status in sorted(statuses, key=lambda s: s.ts):
        machine_id = ids.get((status.site, status.machine))
        if machine_id is None:
            ignored += 1
            continue
        await conn.execute(
            update(Machine)
            .where(Machine.id == machine_id)
            .where(Machine.status_changed_at.is_(None) | (Machine.status_changed_at <= status.ts))
            .values(online=status.online, status_changed_at=status.ts)
        )
    return ignored


async def _upsert_gateways(conn: AsyncConnection, statuses: Sequence[GatewayStatus]) -> None:
    """Each gateway's newest status (an older one arriving late changes nothing)."""
    newest: dict[tuple[str, str], GatewayStatus] = {}
    for status in statuses:
        key = (status.site, status.gateway_id)
        if key not in newest or newest[key].ts <= status.ts:
            newest[key] = status
    for status in newest.values():
        backlog = status.backlog or GatewayBacklog()
        values = {
            "site": status.site,
            "gateway_id": status.gateway_id,
            "online": status.online,
            "status_at": status.ts,
            "backlog_messages": backlog.messages,
            "backlog_readings": backlog.readings,
            "backlog_oldest_age_s": backlog.oldest_age_s,
            "backlog_bytes": backlog.bytes,
            "backlog_max_bytes": backlog.max_bytes,
            "backlog_seconds_to_full": backlog.seconds_to_full,
        }
        statement = _dialect_insert(conn, Gateway).values(values)
        # A status without a backlog (the will, sent by the broker when the gateway drops) keeps the last figures:
        # during an outage they are what the operator needs.
        kept = {
            key: func.coalesce(statement.excluded[key], getattr(Gateway, key))
            for key in values
            if key.startswith("backlog_")
        }
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["site", "gateway_id"],
                set_={"online": statement.excluded.online, "status_at": statement.excluded.status_at, **kept},
                where=Gateway.status_at <= statement.excluded.status_at,
            )
        )


async def _record_command_results(
    conn: AsyncConnection, results: Sequence[CommandResult]
) -> tuple[int, list[RejectedMessage]]:
    """Put each gateway answer on its command's row; an answer for no command of that machine is a dead letter.

    A command already answered keeps its first answer (a redelivered result changes nothing). Only a `sent` row
    takes one: that is also what lets an answer buffered through an outage land after the command showed as
    expired in the API (its row still says `sent`).
    """
    recorded = 0
    letters = []
    for item in results:
        row = (
            await conn.execute(
                select(MachineCommand.status, Machine.site, Machine.code)
                .join(Machine, Machine.id == MachineCommand.machine_id)
                .where(MachineCommand.id == item.result.id)
            )
        ).first()
        if row is None or (row.site, row.code) != (item.site, item.machine):
            reason = f"command result for no command {item.result.id} of machine {item.machine}"
            letters.append(RejectedMessage("mqtt", item.topic, item.payload, reason))
            continue
        if row.status != CommandStatus.SENT:
            log.warning(
                "command_result_ignored",
                command_id=str(item.result.id),
                status=item.result.status,
                recorded=str(row.status),
                reason="the command has its answer already",
            )
            continue
        updated = await conn.execute(
            update(MachineCommand)
            .where(MachineCommand.id == item.result.id, MachineCommand.status == CommandStatus.SENT)
            .values(
                status=CommandStatus(item.result.status),
                reason=item.result.reason,
                finished_at=item.result.ts,
                gateway_id=item.result.gateway,
                outcome=[write.model_dump() for write in item.result.writes],
            )
        )
        recorded += updated.rowcount  # 0 when another ingestor recorded an answer meanwhile
    return recorded, letters
