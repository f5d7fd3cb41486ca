"""The readings body written with orjson is byte for byte what pydantic's `ReadingsRead` (the documented
response model) writes, and the CSV shows the same values."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from api.machines.history import Bucket, Readings, Series
from api.machines.schemas import ReadingsRead, readings_csv, readings_json

T = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
# Values whose text differs between float writers if anything is off: whole numbers, tiny and huge, negative zero.
VALUES = [212.5, 5.0, -0.0, 1e-5, 1.5e-7, 1e20, 0.1 + 0.2, 123456789012345678.0, -40.125]


def bucketed() -> Readings:
    points = [
        {"t": T + timedelta(minutes=5 * i), "avg": value, "max": value + 1, "count": i + 1}
        for i, value in enumerate(VALUES)
    ]
    return Readings(
        machine_id=7,
        bucket=Bucket.M5,
        start=T,
        end=T + timedelta(hours=1),
        columns=("max", "avg", "count"),
        series=[Series(tag="temp", points=points), Series(tag="silent", points=[])],
    )


def raw() -> Readings:
    # Microseconds, whole seconds and a non-UTC offset (kept as given, as pydantic keeps it).
    moments = [
        T + timedelta(microseconds=250_000),
        T + timedelta(seconds=1),
        (T + timedelta(seconds=2, microseconds=1)).astimezone(timezone(timedelta(hours=1))),
    ]
    return Readings(
        machine_id=7,
        bucket=Bucket.RAW,
        start=T + timedelta(minutes=10, microseconds=250_000),
        end=T + timedelta(hours=2),
        columns=("value",),
        series=[Series(tag="temp", points=[{"t": t, "value": v} for t, v in zip(moments, VALUES, strict=False)])],
    )


@pytest.mark.parametrize("readings", [bucketed(), raw()], ids=["bucketed", "raw"])
def test_json_is_what_the_response_model_writes(readings: Readings) -> None:
    expected = ReadingsRead.model_validate(readings).model_dump_json(by_alias=True, exclude_none=True)
    assert readings_json(readings) == expected.encode()


def test_json_keys_follow_the_documented_order() -> None:
    body = orjson.loads(readings_json(bucketed()))
    assert list(body) == ["machine_id", "bucket", "from", "to", "series"]
    assert (body["bucket"], body["from"], body["to"]) == ("5m", "2026-11-26T06:00:00Z", "2026-11-26T07:00:00Z")
    assert list(body["series"][0]["points"][0]) == ["t", "avg", "max", "count"]
    assert body["series"][1] == {"tag": "silent", "points": []}


@pytest.mark.parametrize("readings", [bucketed(), raw()], ids=["bucketed", "raw"])
def test_csv_shows_the_json_values_in_the_asked_column_order(readings: Readings) -> None:
    table = list(csv.reader(io.StringIO(readings_csv(readings))))
    body = orjson.loads(readings_json(readings))
    assert table[0] == ["tag", "t", *readings.columns]
    expected = [
        [series["tag"], point["t"], *(str(point[column]) for column in readings.columns)]
        for series in body["series"]
        for point in series["points"]
    ]
    assert table[1:] == expected
