"""Bucketed series of readings, one query per backend: TimescaleDB rollups, plain PostgreSQL, SQLite.

On TimescaleDB the 1-minute and 1-hour buckets come from the continuous aggregates `reading_1m` / `reading_1h`
(real-time: the newest, not yet materialised buckets are computed from `reading` at query time); other sizes
use `time_bucket` on `reading`. Plain PostgreSQL uses `date_bin`, SQLite integer arithmetic on epoch seconds.
Every backend aligns buckets to midnight UTC, so they all agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

ROLLUP_VIEWS = {timedelta(minutes=1): "reading_1m", timedelta(hours=1): "reading_1h"}


class Backend(StrEnum):
    """Which query family answers."""

    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"
    SQLITE = "sqlite"


@dataclass(frozen=True)
class BucketRow:
    """The aggregates of one tag in one bucket."""

    bucket: datetime
    tag: str
    avg: float
    min: float
    max: float
    count: int
    last: float


async def backend_of(conn: AsyncConnection) -> Backend:
    """TimescaleDB when the rollup views exist, else the plain dialect."""
    if conn.dialect.name == "sqlite":
        return Backend.SQLITE
    found = await conn.scalar(text("SELECT to_regclass('reading_1m') IS NOT NULL"))
    return Backend.TIMESCALEDB if found else Backend.POSTGRESQL


def _ranked_sql(bucket_expression: str) -> str:
    # The last value of a bucket is the one with the newest ts: rank rows inside each (tag, bucket).
    # bucket_expression is one of this module's constants; every value is a bound parameter.
    return (
        "SELECT bucket, tag, avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count, "  # noqa: S608
        "max(CASE WHEN newest = 1 THEN value END) AS last FROM ("
        f"  SELECT {bucket_expression} AS bucket, tag, value, "
        "   row_number() OVER (PARTITION BY tag, " + bucket_expression + " ORDER BY ts DESC) AS newest "
        "  FROM reading WHERE machine_id = :machine_id AND tag IN :tags AND ts >= :start AND ts < :end"
        ") ranked GROUP BY bucket, tag ORDER BY tag, bucket"
    )


async def bucketed(
    conn: AsyncConnection,
    *,
    machine_id: int,
    tags: Sequence[str],
    start: datetime,
    end: datetime,
    bucket: timedelta,
) -> list[BucketRow]:
    """avg / min / max / count / last of each tag per bucket, ordered by tag then time.

    Whole buckets are answered: [start, end) is widened to bucket boundaries, as rollups can only be cut there.
    """
    if not tags:
        return []
    seconds = int(bucket.total_seconds())
    if seconds < 1 or seconds != bucket.total_seconds():
        raise ValueError("bucket must be a whole number of seconds")
    start, end = align(start, end, bucket)
    params: dict[str, object] = {"machine_id": machine_id, "tags": list(tags), "start": start, "end": end}
    kind = await backend_of(conn)
    if kind is Backend.TIMESCALEDB and bucket in ROLLUP_VIEWS:
        sql = (
            f"SELECT bucket, tag, avg, min, max, count, last FROM {ROLLUP_VIEWS[bucket]} "  # noqa: S608 -- fixed names
            "WHERE machine_id = :machine_id AND tag IN :tags AND bucket >= :start AND bucket < :end "
            "ORDER BY tag, bucket"
        )
    elif kind is Backend.TIMESCALEDB:
        sql = _ranked_sql("time_bucket(make_interval(secs => :seconds), ts)")
        params["seconds"] = seconds
    elif kind is Backend.POSTGRESQL:
        sql = _ranked_sql("date_bin(make_interval(secs => :seconds), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')")
        params["seconds"] = seconds
    else:
        # SQLite keeps UTC text; whole seconds since the epoch, cut down to the bucket.
        sql = _ranked_sql("(CAST(strftime('%s', ts) AS INTEGER) / :seconds) * :seconds")
        params["seconds"] = seconds
        params["start"], params["end"] = _sqlite_time(start), _sqlite_time(end)
    statement = text(sql).bindparams(bindparam("tags", expanding=True))
    rows = await conn.execute(statement, params)
    return [
        BucketRow(
            bucket=_as_datetime(bucket_value),
            tag=tag,
            avg=float(avg),
            min=float(low),
            max=float(high),
            count=int(count),
            last=float(last),
        )
        for bucket_value, tag, avg, low, high, count, last in rows
    ]


def align(start: datetime, end: datetime, bucket: timedelta) -> tuple[datetime, datetime]:
    """[start, end) widened to whole buckets counted from midnight UTC (the epoch)."""
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
