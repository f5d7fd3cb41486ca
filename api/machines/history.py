"""Machine history: latest values, bucketed or raw series of readings, and the state timeline.

Plain async functions over a session (no FastAPI, no commit, no wall clock: `now` is an argument).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.machines.service import get_machine
from core.contract import MachineState, QualityName, quality_name
from core.errors import InvalidInput
from core.models import MachineLatest, MachineStateChange, Reading
from core.timeseries import NOT_GOOD, Points, align, bucketed_points, raw_points


class Bucket(StrEnum):
    """The bucket sizes a client may ask for; `auto` and `raw` are resolved by `readings`."""

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"
    AUTO = "auto"
    RAW = "raw"


class Agg(StrEnum):
    """The aggregates of a bucket (`core.timeseries.AGGREGATES`)."""

    AVG = "avg"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    COUNT = "count"


BUCKET_SIZES = {
    Bucket.M1: timedelta(minutes=1),
    Bucket.M5: timedelta(minutes=5),
    Bucket.M15: timedelta(minutes=15),
    Bucket.H1: timedelta(hours=1),
    Bucket.D1: timedelta(days=1),
}
# The longest range each size may answer (10 years counts its leap days); `raw` is far smaller.
MAX_SPAN = {
    Bucket.M1: timedelta(days=2),
    Bucket.M5: timedelta(days=7),
    Bucket.M15: timedelta(days=31),
    Bucket.H1: timedelta(days=366),
    Bucket.D1: timedelta(days=3653),
    Bucket.RAW: timedelta(hours=6),
}
SPAN_TEXT = {
    Bucket.M1: "2 days",
    Bucket.M5: "7 days",
    Bucket.M15: "31 days",
    Bucket.H1: "366 days",
    Bucket.D1: "10 years",
    Bucket.RAW: "6 hours",
}
AUTO_MAX_POINTS = 1000
RAW_MAX_POINTS = 10_000
MAX_TAGS = 20
STATES_MAX_SPAN = timedelta(days=366)
STATES_MAX_CHANGES = 20_000


@dataclass(frozen=True)
class LatestValue:
    """The newest value of one tag."""

    tag: str
    ts: datetime
    value: float | None
    quality: QualityName = "good"


@dataclass(frozen=True)
class CurrentState:
    """The state a machine is in, and since when (repeated samples of one state do not move `since`)."""

    state: MachineState
    since: datetime


@dataclass(frozen=True)
class Latest:
    """A machine's newest values by tag and its current state."""

    machine_id: int
    values: list[LatestValue]
    state: CurrentState | None


@dataclass(frozen=True)
class Series:
    """The points of one tag, oldest first: `{"t": bucket start, <asked aggregates>}` or `{"t": ts, "value": v}`.

    Plain dicts, built once from the rows and written as they are (orjson) by the API.
    """

    tag: str
    points: list[dict[str, Any]]


@dataclass(frozen=True)
class Readings:
    """A series per asked tag over [start, end): the range actually answered (whole buckets, or as asked for raw)."""

    machine_id: int
    bucket: Bucket
    start: datetime
    end: datetime
    columns: tuple[str, ...]
    series: list[Series]


@dataclass(frozen=True)
class Interval:
    """A state held over [start, end)."""

    state: MachineState
    start: datetime
    end: datetime

    @property
    def duration_s(self) -> float:
        """The length in seconds."""
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Timeline:
    """The states over a window, and the seconds spent in each state (every state listed, zero when unseen)."""

    machine_id: int
    start: datetime
    end: datetime
    timeline: list[Interval]
    totals: dict[str, float]


async def latest(session: AsyncSession, *, machine_id: int) -> Latest:
    """The machine's latest value of each tag (by tag) and its current state."""
    await get_machine(session, machine_id=machine_id)
    rows = await session.scalars(
        select(MachineLatest).where(MachineLatest.machine_id == machine_id).order_by(MachineLatest.tag)
    )
    values = [LatestValue(tag=row.tag, ts=row.ts, value=row.value, quality=quality_name(row.quality)) for row in rows]
    return Latest(machine_id=machine_id, values=values, state=await _current_state(session, machine_id=machine_id))


async def _current_state(session: AsyncSession, *, machine_id: int) -> CurrentState | None:
    of_machine = MachineStateChange.machine_id == machine_id
    newest = (
        await session.execute(
            select(MachineStateChange.ts, MachineStateChange.state)
            .where(of_machine)
            .order_by(MachineStateChange.ts.desc())
            .limit(1)
        )
    ).first()
    if newest is None:
        return None
    # A late sample can leave two rows of one state in a row: `since` is where the run began.
    other = await session.scalar(
        select(func.max(MachineStateChange.ts)).where(of_machine, MachineStateChange.state != newest.state)
    )
    first = select(func.min(MachineStateChange.ts)).where(of_machine)
    if other is not None:
        first = first.where(MachineStateChange.ts > other)
    since: datetime = await session.scalar(first) or newest.ts
    return CurrentState(state=newest.state, since=since)


def resolve_bucket(bucket: Bucket, *, start: datetime, end: datetime) -> Bucket:
    """The bucket that answers: `auto` becomes the smallest size with at most 1000 points per tag (else 1d)."""
    _check_window(start, end)
    if bucket is Bucket.AUTO:
        for size in BUCKET_SIZES:
            low, high = align(start, end, BUCKET_SIZES[size])
            if (high - low) / BUCKET_SIZES[size] <= AUTO_MAX_POINTS:
                bucket = size
                break
        else:
            bucket = Bucket.D1
    if end - start > MAX_SPAN[bucket]:
        limit = SPAN_TEXT[bucket]
        raise InvalidInput(
            f"bucket={bucket.value} answers at most {limit}; ask for a shorter range or a larger bucket",
            fields={"bucket": f"{bucket.value} covers at most {limit}", "from": f"at most {limit} before to"},
            code="range_too_large",
        )
    return bucket


async def readings(
    session: AsyncSession,
    *,
    machine_id: int,
    tags: Sequence[str],
    start: datetime,
    end: datetime,
    bucket: Bucket,
    aggs: Sequence[Agg],
    zone: ZoneInfo | None = None,
    good_only: bool = False,
) -> Readings:
    """Each tag's series over [start, end): bucket aggregates (of good values, with how many were not good), or the
    raw readings of a small range (only the good ones with `good_only`).

    With a `zone` (the plant's), `1d` buckets are its local days, from local midnight to local midnight.
    """
    bucket = resolve_bucket(bucket, start=start, end=end)
    if bucket is Bucket.RAW:
        return await _raw(session, machine_id=machine_id, tags=tags, start=start, end=end, good_only=good_only)
    size = BUCKET_SIZES[bucket]
    points = await bucketed_points(
        await session.connection(),
        machine_id=machine_id,
        tags=tags,
        start=start,
        end=end,
        bucket=size,
        aggs=[agg.value for agg in aggs],
        zone=zone,
    )
    await _found_or_registered(session, machine_id=machine_id, points=points)
    low, high = align(start, end, size, zone=zone)
    return Readings(
        machine_id=machine_id,
        bucket=bucket,
        start=low,
        end=high,
        columns=(*(agg.value for agg in aggs), NOT_GOOD),
        series=[Series(tag=tag, points=series) for tag, series in points.items()],
    )


async def _found_or_registered(session: AsyncSession, *, machine_id: int, points: Points) -> None:
    # The series statements find rows only for a registered machine: the lookup (NotFound) is needed only
    # when they found nothing, which saves a round trip on every answer with data.
    if not any(points.values()):
        await get_machine(session, machine_id=machine_id)


async def _raw(
    session: AsyncSession, *, machine_id: int, tags: Sequence[str], start: datetime, end: datetime, good_only: bool
) -> Readings:
    # One read: at most RAW_MAX_POINTS per tag can be answered, so more rows than that for all tags together
    # (or for one tag) mean a refusal, whose figures the count below gives.
    limit = RAW_MAX_POINTS * len(tags)
    points, fetched = await raw_points(
        await session.connection(),
        machine_id=machine_id,
        tags=tags,
        start=start,
        end=end,
        limit=limit + 1,
        good_only=good_only,
    )
    if fetched > limit or any(len(series) > RAW_MAX_POINTS for series in points.values()):
        counts = await session.execute(
            select(Reading.tag, func.count())
            .where(Reading.machine_id == machine_id, Reading.tag.in_(tags), Reading.ts >= start, Reading.ts < end)
            .group_by(Reading.tag)
        )
        over = {tag: count for tag, count in counts if count > RAW_MAX_POINTS}
        tag, count = max(over.items(), key=lambda item: item[1])
        raise InvalidInput(
            f"bucket=raw returns at most {RAW_MAX_POINTS} points per tag; {tag} has {count} in the range",
            fields={"bucket": f"raw allows at most {RAW_MAX_POINTS} points per tag; use a bucket or a shorter range"},
            code="range_too_large",
        )
    await _found_or_registered(session, machine_id=machine_id, points=points)
    return Readings(
        machine_id=machine_id,
        bucket=Bucket.RAW,
        start=start,
        end=end,
        columns=("value", "quality"),
        series=[Series(tag=tag, points=series) for tag, series in points.items()],
    )


async def state_timeline(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime, now: datetime
) -> Timeline:
    """The states over [start, min(end, now)): the state in force at `start` clipped there, then each change."""
    _check_window(start, end)
    if end - start > STATES_MAX_SPAN:
        raise InvalidInput(
            f"The state timeline covers at most {STATES_MAX_SPAN.days} days",
            fields={"from": f"at most {STATES_MAX_SPAN.days} days before to"},
            code="range_too_large",
        )
    await get_machine(session, machine_id=machine_id)
    until = min(end, now)
    entries: list[tuple[datetime, MachineState]] = []
    if until > start:
        # The state in force at `start` is clipped there.
        changes = await state_changes(session, machine_id=machine_id, start=start, end=until)
        entries = [(max(ts, start), state) for ts, state in changes]
    intervals = timeline_of(entries, until=until)
    totals = dict.fromkeys((state.value for state in MachineState), 0.0)
    for interval in intervals:
        totals[interval.state.value] += interval.duration_s
    return Timeline(machine_id=machine_id, start=start, end=end, timeline=intervals, totals=totals)


async def state_changes(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime
) -> list[tuple[datetime, MachineState]]:
    """The change in force at `start` (at its own time), then every change in (start, end), oldest first."""
    of_machine = MachineStateChange.machine_id == machine_id
    columns = select(MachineStateChange.ts, MachineStateChange.state)
    before = (
        await session.execute(
            columns.where(of_machine, MachineStateChange.ts <= start).order_by(MachineStateChange.ts.desc()).limit(1)
        )
    ).first()
    changes = list(
        await session.execute(
            columns.where(of_machine, MachineStateChange.ts > start, MachineStateChange.ts < end)
            .order_by(MachineStateChange.ts)
            .limit(STATES_MAX_CHANGES + 1)
        )
    )
    if len(changes) > STATES_MAX_CHANGES:
        raise InvalidInput(
            f"More than {STATES_MAX_CHANGES} state changes in the window; ask for a shorter one",
            fields={"from": f"the window holds more than {STATES_MAX_CHANGES} state changes"},
            code="range_too_large",
        )
    return [(ts, state) for ts, state in ([before] if before is not None else []) + changes]


def timeline_of(entries: Sequence[tuple[datetime, MachineState]], *, until: datetime) -> list[Interval]:
    """Intervals from time-ordered (since, state) entries, the last ending at `until`; repeats of a state merge."""
    merged: list[tuple[datetime, MachineState]] = []
    for since, state in entries:
        if not merged or merged[-1][1] != state:
            merged.append((since, state))
    if not merged:
        return []
    ends = [since for since, _ in merged[1:]] + [until]
    return [
        Interval(state=state, start=since, end=stop)
        for (since, state), stop in zip(merged, ends, strict=True)
        if stop > since
    ]


def _check_window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise InvalidInput("`from` must be before `to`", fields={"from": "must be before to"}, code="invalid_window")
