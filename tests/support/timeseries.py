"""Rollups as rows, for tests that compare them with a naive computation: a view over `bucketed_points`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from core.timeseries import bucketed_points


@dataclass(frozen=True)
class BucketRow:
    """The aggregates of one tag in one bucket (None where not asked for)."""

    bucket: datetime
    tag: str
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None
    last: float | None = None


async def bucketed(conn: AsyncConnection, *, tags: Sequence[str], **query: Any) -> list[BucketRow]:
    """`bucketed_points(conn, tags=…, **query)` as one `BucketRow` per tag and bucket, ordered by tag then time."""
    points = await bucketed_points(conn, tags=sorted(set(tags)), **query)
    return [
        BucketRow(bucket=point["t"], tag=tag, **{key: value for key, value in point.items() if key != "t"})
        for tag, series in points.items()
        for point in series
    ]
