"""Bucketed series of readings, one query per backend: TimescaleDB rollups, plain PostgreSQL, SQLite.

On TimescaleDB the 1-minute and 1-hour buckets come from the continuous aggregates `reading_1m` / `reading_1h`
(real-time: the newest, not yet materialised buckets are computed from `reading` at query time); other sizes
use `time_bucket` on `reading`. Plain PostgreSQL uses `date_bin`, SQLite integer arithmetic on epoch seconds.
Every backend aligns buckets to midnight UTC, so they all agree. One-day buckets are the plant's local days when a
zone is given: SQL finds each reading's local date (`ts AT TIME ZONE zone` on PostgreSQL and TimescaleDB; on SQLite,
which has no time-zone database, from the zone's offsets over the range computed in Python) and Python turns each
date into its local midnight (`core.planttime`), so every backend starts a day at the same instant, even where a
local midnight is skipped or repeated.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.contract import quality_name
from core.models import Machine, Reading
from core.planttime import DAY, align_days, day_from_number, midnight, offsets

ROLLUP_VIEWS = {timedelta(minutes=1): "reading_1m", timedelta(hours=1): "reading_1h"}
# Every aggregate a bucket has, in the order the columns (and the JSON keys) come. Aggregates are over good values
# only (quality NULL); `not_good`, how many uncertain or bad readings the bucket also held, comes with every point.
AGGREGATES = ("avg", "min", "max", "last", "count")
NOT_GOOD = "not_good"
_GOOD = "quality IS NULL"
_AGGREGATE_SQL = {
    "avg": f"avg(value) FILTER (WHERE {_GOOD}) AS avg",
    "min": f"min(value) FILTER (WHERE {_GOOD}) AS min",
    "max": f"max(value) FILTER (WHERE {_GOOD}) AS max",
    "last": f"max(CASE WHEN newest = 1 AND {_GOOD} THEN value END) AS last",
    "count": f"count(*) FILTER (WHERE {_GOOD}) AS count",
    NOT_GOOD: f"count(*) FILTER (WHERE NOT ({_GOOD})) AS not_good",
}

# Rows only of a registered machine (`reading` has no foreign key): an unknown id finds nothing, in the same
# statement, so the caller need not look the machine up first.
_REGISTERED = "EXISTS (SELECT 1 FROM machine WHERE machine.id = {machine_id})"

Points = dict[str, list[dict[str, Any]]]


class Backend(StrEnum):
    """Which query family answers."""

    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"
    SQLITE = "sqlite"


# Found once per engine: which backend answers changes only with a migration.
_BACKENDS: weakref.WeakKeyDictionary[Engine, Backend] = weakref.WeakKeyDictionary()


async def backend_of(conn: AsyncConnection) -> Backend:
    """TimescaleDB when the rollup views exist, else the plain dialect (asked once per engine)."""
    if conn.dialect.name == "sqlite":
        return Backend.SQLITE
    known = _BACKENDS.get(conn.sync_engine)
    if known is not None:
        return known
    found = await conn.scalar(text("SELECT to_regclass('reading_1m') IS NOT NULL"))
    kind = Backend.TIMESCALEDB if found else Backend.POSTGRESQL
    _BACKENDS[conn.sync_engine] = kind
    return kind


def _grouped_sql(bucket_expression: str, aggs: Sequence[str]) -> str:
    # A template (see _PLACEHOLDERS) of this module's constants: aggs come from AGGREGATES, every value is bound.
    # The last value of a bucket is the one with the newest ts: rows are ranked inside each (tag, bucket), a
    # window (and its sort) paid only when `last` is asked for.
    newest = (
        f", row_number() OVER (PARTITION BY tag, {bucket_expression}, {_GOOD} ORDER BY ts DESC) AS newest"
        if "last" in aggs
        else ""
    )
    return (
        "SELECT tag, bucket" + "".join(f", {_AGGREGATE_SQL[agg]}" for agg in aggs) + " FROM ("  # noqa: S608
        f"  SELECT {bucket_expression} AS bucket, tag, value, quality{newest} FROM reading "
        "  WHERE machine_id = {machine_id} AND tag {in_tags} AND ts >= {start} AND ts < {end} AND "
        + _REGISTERED
        + ") ranked GROUP BY tag, bucket ORDER BY tag, bucket"
    )


# The statements are written once for both drivers: SQLAlchemy's named parameters (SQLite, with the tag list
# expanded), psycopg's own (PostgreSQL, the tags as one array).
_PLACEHOLDERS = {
    Backend.SQLITE: {
        "machine_id": ":machine_id",
        "in_tags": "IN :tags",
        "start": ":start",
        "end": ":end",
        "seconds": ":seconds",
    },
    Backend.POSTGRESQL: {
        "machine_id": "%(machine_id)s",
        "in_tags": "= ANY(%(tags)s)",
        "start": "%(start)s",
        "end": "%(end)s",
        "seconds": "%(seconds)s",
    },
}


async def bucketed_points(
    conn: AsyncConnection,
    *,
    machine_id: int,
    tags: Sequence[str],
    start: datetime,
    end: datetime,
    bucket: timedelta,
    aggs: Sequence[str] = AGGREGATES,
    zone: ZoneInfo | None = None,
) -> Points:
    """The asked aggregates of each tag per bucket: `{tag: [{"t": bucket start, agg: value, ..., "not_good": n}]}`.

    Aggregates cover good values only; `not_good` counts the uncertain and bad readings of the bucket (a bucket of
    bad readings alone has null aggregates, a count of 0 and its `not_good`).

    Every asked tag is a key (an empty list when it has no readings), points oldest first, the keys of a point
    in `AGGREGATES` order. Whole buckets are answered: [start, end) is widened to bucket boundaries, as rollups
    can only be cut there. With a `zone`, one-day buckets are that zone's local days (23 or 25 hours across a
    daylight-saving change). A machine that is not registered has no points.
    """
    unknown = [agg for agg in aggs if agg not in AGGREGATES]
    if unknown:
        raise ValueError(f"unknown aggregates {unknown}")
    chosen = [*(agg for agg in AGGREGATES if agg in aggs), NOT_GOOD]
    points: Points = {tag: [] for tag in tags}
    if not tags:
        return points
    seconds = int(bucket.total_seconds())
    if seconds < 1 or seconds != bucket.total_seconds():
        raise ValueError("bucket must be a whole number of seconds")
    local_days = zone if zone is not None and bucket == DAY else None
    start, end = align(start, end, bucket, zone=local_days)
    params: dict[str, object] = {
        "machine_id": machine_id,
        "tags": list(tags),
        "start": start,
        "end": end,
        "seconds": seconds,
    }
    kind = await backend_of(conn)
    if local_days is not None:
        return await _local_day_points(
            conn, kind, machine_id=machine_id, tags=tags, start=start, end=end, zone=local_days, chosen=chosen
        )
    if kind is Backend.TIMESCALEDB and bucket in ROLLUP_VIEWS:
        del params["seconds"]
        template = (
            "SELECT tag, bucket" + "".join(f", {agg}" for agg in chosen) + f" FROM {ROLLUP_VIEWS[bucket]} "  # noqa: S608 -- fixed names
            "WHERE machine_id = {machine_id} AND tag {in_tags} AND bucket >= {start} AND bucket < {end} AND "
            + _REGISTERED
            + " ORDER BY tag, bucket"
        )
    elif kind is Backend.TIMESCALEDB:
        template = _grouped_sql("time_bucket(make_interval(secs => {seconds}), ts)", chosen)
    elif kind is Backend.POSTGRESQL:
        template = _grouped_sql(
            "date_bin(make_interval(secs => {seconds}), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')", chosen
        )
    else:
        # SQLite keeps UTC text; whole seconds since the epoch, cut down to the bucket.
        template = _grouped_sql("(CAST(strftime('%s', ts) AS INTEGER) / {seconds}) * {seconds}", chosen)
        params["start"], params["end"] = _sqlite_time(start), _sqlite_time(end)
    keys = ("t", *chosen)
    if kind is Backend.SQLITE:
        sql = template.format_map(_PLACEHOLDERS[Backend.SQLITE])
        statement = text(sql).bindparams(bindparam("tags", expanding=True))
        for tag, moment, *values in await conn.execute(statement, params):
            points[tag].append(dict(zip(keys, (_as_datetime(moment), *values), strict=True)))
        return points
    sql = template.format_map(_PLACEHOLDERS[Backend.POSTGRESQL])
    for row in await _fetch_binary(conn, sql, params):
        # psycopg already gives aware datetimes, floats and ints: the row goes into the point as it is.
        points[row[0]].append(dict(zip(keys, row[1:], strict=True)))
    return points


async def _local_day_points(
    conn: AsyncConnection,
    kind: Backend,
    *,
    machine_id: int,
    tags: Sequence[str],
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    chosen: Sequence[str],
) -> Points:
    # The plant's local days, [start, end) already aligned to them: a day across a clock change has 23 or 25 hours.
    points: Points = {tag: [] for tag in tags}
    keys = ("t", *chosen)
    params: dict[str, object] = {"machine_id": machine_id, "tags": list(tags), "start": start, "end": end}
    if kind is Backend.SQLITE:
        # No time-zone database in SQLite: the local date is (epoch + the offset in force) // 86400, with the
        # zone's offsets over the range from Python, which also turns each day's number into its start.
        epoch = "CAST(strftime('%s', ts) AS INTEGER)"
        changes = offsets(start, end, zone)
        cases = "".join(f" WHEN {epoch} < :change_{index} THEN :offset_{index - 1}" for index in range(1, len(changes)))
        last = f":offset_{len(changes) - 1}"
        offset = f"CASE{cases} ELSE {last} END" if cases else last
        for index, (since, seconds) in enumerate(changes):
            params[f"change_{index}"], params[f"offset_{index}"] = since, seconds
        params["start"], params["end"] = _sqlite_time(start), _sqlite_time(end)
        sql = _grouped_sql(f"(({epoch} + {offset}) / 86400)", chosen).format_map(_PLACEHOLDERS[Backend.SQLITE])
        statement = text(sql).bindparams(bindparam("tags", expanding=True))
        for tag, number, *values in await conn.execute(statement, params):
            points[tag].append(dict(zip(keys, (day_from_number(number, zone), *values), strict=True)))
        return points
    # PostgreSQL and TimescaleDB alike: only the local date comes from SQL. `date_trunc('day', …) AT TIME ZONE zone`
    # would read a repeated local midnight (America/Havana, 1 November 2026) as its second occurrence; Python, like
    # the API's input, as its first.
    params["zone"] = zone.key
    expression = "(ts AT TIME ZONE {zone}::text)::date"
    sql = _grouped_sql(expression, chosen).format_map({**_PLACEHOLDERS[Backend.POSTGRESQL], "zone": "%(zone)s"})
    for tag, day, *values in await _fetch_binary(conn, sql, params):
        points[tag].append(dict(zip(keys, (midnight(day, zone), *values), strict=True)))
    return points


async def raw_points(
    conn: AsyncConnection,
    *,
    machine_id: int,
    tags: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int,
    good_only: bool = False,
) -> tuple[Points, int]:
    """The readings of each tag in [start, end) as `{"t": ts (UTC), "value": v}` points, oldest first; a reading
    that is not good carries `"quality": "uncertain" | "bad"` too (and its value may be null), unless `good_only`
    leaves such readings out.

    At most `limit` rows in all are read, and how many were read is returned with them, so a caller that allows
    fewer than `limit` sees an overflow without counting first. A machine that is not registered has none.
    """
    points: Points = {tag: [] for tag in tags}
    if not tags:
        return points, 0
    if await backend_of(conn) is Backend.SQLITE:
        query = (
            select(Reading.tag, Reading.ts, Reading.value, Reading.quality)
            .where(
                Reading.machine_id == machine_id,
                Reading.tag.in_(tags),
                Reading.ts >= start,
                Reading.ts < end,
                select(Machine.id).where(Machine.id == machine_id).exists(),
            )
            .order_by(Reading.tag, Reading.ts)
            .limit(limit)
        )
        if good_only:
            query = query.where(Reading.quality.is_(None))
        rows: Sequence[tuple[Any, ...]] = (await conn.execute(query)).all()
        utc = True  # UTCDateTime restores the zone
    else:
        placeholders = _PLACEHOLDERS[Backend.POSTGRESQL]
        sql = (
            "SELECT tag, ts, value, quality FROM reading "  # noqa: S608 -- this module's constants, every value bound
            "WHERE machine_id = {machine_id} AND tag {in_tags} AND ts >= {start} AND ts < {end} AND "
            + _REGISTERED
            + (f" AND {_GOOD}" if good_only else "")
            + " ORDER BY tag, ts LIMIT %(limit)s"
        ).format_map(placeholders)
        params = {"machine_id": machine_id, "tags": list(tags), "start": start, "end": end, "limit": limit}
        rows = await _fetch_binary(conn, sql, params)
        # psycopg gives the session's time zone (one for all rows): UTC as UTCDateTime would, without a conversion
        # per row when the session already is in UTC.
        utc = not rows or _is_utc(rows[0][1].tzinfo)
    for tag, ts, value, quality in rows:
        point = {"t": ts if utc else ts.astimezone(UTC), "value": value}
        if quality is not None:
            point["quality"] = quality_name(quality)
        points[tag].append(point)
    return points, len(rows)


def _is_utc(zone: object) -> bool:
    return zone is UTC or getattr(zone, "key", None) in {"UTC", "Etc/UTC"}


async def _fetch_binary(conn: AsyncConnection, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
    # A series is thousands of rows: psycopg's binary format and plain tuples (no SQLAlchemy row per row) take
    # about half the client time of text rows through SQLAlchemy. Same connection, so the same transaction.
    if not conn.in_transaction():
        # As an execute would: psycopg opens a transaction on the first statement, and the caller's commit or
        # rollback must be the one that ends it.
        await conn.begin()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor(binary=True) as cursor:
        await cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = await cursor.fetchall()
    return rows


def align(
    start: datetime, end: datetime, bucket: timedelta, *, zone: ZoneInfo | None = None
) -> tuple[datetime, datetime]:
    """[start, end) widened to whole buckets counted from midnight UTC (the epoch); one-day buckets to the local
    days of `zone` when one is given."""
    if zone is not None and bucket == DAY:
        return align_days(start, end, zone)
    seconds = int(bucket.total_seconds())
    low = int(start.timestamp()) // seconds * seconds
    high = -(-int(end.timestamp() + (1 if end.microsecond else 0)) // seconds) * seconds
    return datetime.fromtimestamp(low, UTC), datetime.fromtimestamp(high, UTC)


def _sqlite_time(moment: datetime) -> str:
    # The same text form UTCDateTime stores, so comparisons are correct as text.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    raise TypeError(f"unexpected bucket value {value!r}")
