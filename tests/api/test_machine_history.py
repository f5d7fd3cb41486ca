"""Machine history over HTTP: latest values, bucketed and raw readings (JSON and CSV), the state timeline."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert

from core.contract import MachineState
from core.models import MachineLatest, Reading, Role
from tests.support.api import Api
from tests.support.factories import add_readings, add_states, make_machine
from tests.support.history import (
    AGGS,
    BUCKET_CASES,
    T0,
    assert_points_equal,
    ceil_to,
    floor_to,
    generated,
    iso,
    machine_with_data,
    naive_points,
)


@pytest.mark.parametrize(("bucket", "size", "start", "end"), BUCKET_CASES, ids=[case[0] for case in BUCKET_CASES])
async def test_every_aggregate_of_every_bucket_matches_python(
    api: Api, bucket: str, size: timedelta, start: datetime, end: datetime
) -> None:
    rows = generated(7, start=T0 - timedelta(hours=1), hours=53, count=1500, tags=("temp", "pressure", "speed"))
    machine_id = await machine_with_data(api, rows)
    worker = await api.actor(Role.WORKER)
    response = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={
            "tags": "speed,temp,silent",
            "from": iso(start),
            "to": iso(end),
            "bucket": bucket,
            "agg": ",".join(AGGS),
        },
        headers=worker,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["vary"] == "Accept"
    assert (body["machine_id"], body["bucket"]) == (machine_id, bucket)
    assert datetime.fromisoformat(body["from"]) == floor_to(start, size)
    assert datetime.fromisoformat(body["to"]) == ceil_to(end, size)
    assert [series["tag"] for series in body["series"]] == ["speed", "temp", "silent"]
    for series in body["series"][:2]:
        expected = naive_points(rows, series["tag"], start, end, size)
        assert expected
        assert_points_equal(series["points"], expected)
    assert body["series"][2]["points"] == []


async def test_only_the_asked_aggregates_default_avg(api: Api) -> None:
    rows = generated(3, start=T0, hours=2, count=300, tags=("temp",))
    machine_id = await machine_with_data(api, rows)
    headers = await api.actor(Role.PLANNER)
    window = {"tags": "temp", "from": iso(T0), "to": iso(T0 + timedelta(hours=2)), "bucket": "15m"}
    default = (await api.client.get(f"/machines/{machine_id}/readings", params=window, headers=headers)).json()
    assert {key for point in default["series"][0]["points"] for key in point} == {"t", "avg", "not_good"}
    chosen = await api.client.get(
        f"/machines/{machine_id}/readings", params={**window, "agg": "max,count,max"}, headers=headers
    )
    points = chosen.json()["series"][0]["points"]
    assert len(points) == 8
    assert {key for point in points for key in point} == {"t", "max", "count", "not_good"}
    assert sum(point["count"] for point in points) == len(rows)
    repeated = await api.client.get(
        f"/machines/{machine_id}/readings",
        params=[("tags", "temp"), ("tags", "nothing"), ("from", window["from"]), ("to", window["to"])],
        headers=headers,
    )
    assert [series["tag"] for series in repeated.json()["series"]] == ["temp", "nothing"]


@pytest.mark.parametrize(
    ("start", "end", "chosen"),
    [
        (T0, T0 + timedelta(hours=10), "1m"),
        (T0, T0 + timedelta(minutes=1000), "1m"),
        # Widened to whole minutes this is 1001 points, one too many for 1m.
        (T0 + timedelta(seconds=30), T0 + timedelta(minutes=1000, seconds=30), "5m"),
        (T0, T0 + timedelta(days=3), "5m"),
        (T0, T0 + timedelta(days=5), "15m"),
        (T0, T0 + timedelta(days=30), "1h"),
        (T0, T0 + timedelta(days=200), "1d"),
        # Beyond 1000 days no size keeps 1000 points: the largest, 1d, answers (up to its 10 years).
        (T0, T0 + timedelta(days=5 * 365), "1d"),
    ],
)
async def test_auto_picks_the_smallest_bucket_with_at_most_1000_points(
    api: Api, start: datetime, end: datetime, chosen: str
) -> None:
    machine_id = await machine_with_data(api, [("temp", T0 + timedelta(minutes=1), 1.0)])
    headers = await api.actor(Role.WORKER)
    response = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={"tags": "temp", "from": iso(start), "to": iso(end), "bucket": "auto"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["bucket"] == chosen
    default = await api.client.get(
        f"/machines/{machine_id}/readings", params={"tags": "temp", "from": iso(start), "to": iso(end)}, headers=headers
    )
    assert default.json()["bucket"] == chosen


async def test_raw_returns_the_readings_themselves(api: Api) -> None:
    rows = generated(11, start=T0, hours=3, count=900, tags=("temp", "pressure"))
    machine_id = await machine_with_data(api, rows)
    headers = await api.actor(Role.WORKER)
    istanbul = timezone(timedelta(hours=3))
    start, end = T0 + timedelta(minutes=10, milliseconds=250), T0 + timedelta(hours=2)
    response = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={
            "tags": "temp,pressure,silent",
            "from": iso(start.astimezone(istanbul)),
            "to": iso(end),
            "bucket": "raw",
            "agg": "max",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["bucket"], body["from"], body["to"]) == ("raw", "2026-11-26T06:10:00.250000Z", "2026-11-26T08:00:00Z")
    for series in body["series"]:
        expected = sorted((ts, value) for tag, ts, value in rows if tag == series["tag"] and start <= ts < end)
        assert [(datetime.fromisoformat(p["t"]), p["value"]) for p in series["points"]] == expected
        assert all(set(point) == {"t", "value"} for point in series["points"])
    assert [len(series["points"]) > 0 for series in body["series"]] == [True, True, False]


async def test_raw_allows_at_most_10000_points_per_tag(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session)).id
        await add_readings(session, machine_id, [("fast", T0 + timedelta(seconds=i), float(i)) for i in range(10_001)])
    headers = await api.actor(Role.WORKER)
    params = {"tags": "fast,slow", "from": iso(T0), "bucket": "raw"}
    fits = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={**params, "to": iso(T0 + timedelta(seconds=10_000))},
        headers=headers,
    )
    assert fits.status_code == 200, fits.text
    assert len(fits.json()["series"][0]["points"]) == 10_000
    over = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={**params, "to": iso(T0 + timedelta(seconds=10_001))},
        headers=headers,
    )
    assert over.status_code == 422, over.text
    assert over.headers["content-type"] == "application/problem+json"
    assert over.json()["code"] == "range_too_large"
    assert [error["field"] for error in over.json()["errors"]] == ["bucket"]
    assert "fast has 10001" in over.json()["detail"]


@pytest.mark.parametrize("bucket", ["15m", "raw"])
async def test_csv_equals_the_json(api: Api, bucket: str) -> None:
    rows = generated(5, start=T0, hours=4, count=600, tags=("temp", "speed"))
    machine_id = await machine_with_data(api, rows)
    headers = await api.actor(Role.WORKER)
    params = {
        "tags": "temp,speed,silent",
        "from": iso(T0 + timedelta(minutes=7)),
        "to": iso(T0 + timedelta(hours=3)),
        "bucket": bucket,
        "agg": "last,avg,count,min,max",
    }
    url = f"/machines/{machine_id}/readings"
    as_json = (await api.client.get(url, params=params, headers=headers)).json()
    response = await api.client.get(url, params=params, headers={**headers, "Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["vary"] == "Accept"
    table = list(csv.reader(io.StringIO(response.text)))
    columns = ["value", "quality"] if bucket == "raw" else ["last", "avg", "count", "min", "max", "not_good"]
    assert table[0] == ["tag", "t", *columns]
    expected = [
        [series["tag"], point["t"], *(point.get(column, "good") for column in columns)]
        for series in as_json["series"]
        for point in series["points"]
    ]
    assert len(table) - 1 == len(expected) > 10
    for got, want in zip(table[1:], expected, strict=True):
        assert got[:2] == want[:2]
        assert [value if value == "good" else float(value) for value in got[2:]] == want[2:]

    preferred_json = await api.client.get(
        url, params=params, headers={**headers, "Accept": "application/json, text/csv;q=0.5"}
    )
    assert preferred_json.json() == as_json
    preferred_csv = await api.client.get(
        url, params=params, headers={**headers, "Accept": "application/json;q=0.4, text/csv"}
    )
    assert preferred_csv.text == response.text


BASE = {"tags": "temp", "from": "2026-11-26T06:00:00Z", "to": "2026-11-26T07:00:00Z"}
MISSING = object()


def _with(**changes: Any) -> dict[str, Any]:
    params = {**BASE, **{key.rstrip("_"): value for key, value in changes.items()}}
    return {key: value for key, value in params.items() if value is not MISSING}


READINGS_ERRORS = [
    ("missing from", _with(from_=MISSING), {"from"}),
    ("missing to", _with(to=MISSING), {"to"}),
    ("missing tags", _with(tags=MISSING), {"tags"}),
    ("not a time", _with(from_="yesterday"), {"from"}),
    ("year 1", _with(from_="0001-01-01T00:00:00+05:00"), {"from"}),
    ("from equals to", _with(to=BASE["from"]), {"from"}),
    ("from after to", _with(from_="2026-11-26T08:00:00+00:00"), {"from"}),
    ("1m over 2 days", _with(bucket="1m", to="2026-11-28T06:00:01Z"), {"bucket", "from"}),
    ("5m over 7 days", _with(bucket="5m", to="2026-12-03T06:00:01Z"), {"bucket", "from"}),
    ("15m over 31 days", _with(bucket="15m", to="2026-12-27T06:00:01Z"), {"bucket", "from"}),
    ("1h over 366 days", _with(bucket="1h", to="2027-11-28T06:00:00Z"), {"bucket", "from"}),
    ("1d over 10 years", _with(bucket="1d", from_="2016-11-25T00:00:00Z"), {"bucket", "from"}),
    ("auto over 10 years", _with(from_="2016-11-25T00:00:00Z"), {"bucket", "from"}),
    ("raw over 6 hours", _with(bucket="raw", to="2026-11-26T12:00:01Z"), {"bucket", "from"}),
    ("unknown bucket", _with(bucket="2m"), {"bucket"}),
    ("21 tags", _with(tags=",".join(f"t{i}" for i in range(21))), {"tags"}),
    ("upper case tag", _with(tags="temp,Speed"), {"tags"}),
    ("tag with a space", _with(tags="barrel temp"), {"tags"}),
    ("tag too long", _with(tags="x" * 65), {"tags"}),
    ("empty tags", _with(tags=""), {"tags"}),
    ("empty tag in the list", _with(tags="temp,,speed"), {"tags"}),
    ("unknown agg", _with(agg="avg,median"), {"agg"}),
    ("empty agg", _with(agg=""), {"agg"}),
]


def assert_problem(response: Any, fields: set[str]) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert {error["field"] for error in problem["errors"]} == fields, problem


@pytest.mark.parametrize(("case", "params", "fields"), READINGS_ERRORS, ids=[case[0] for case in READINGS_ERRORS])
async def test_bad_readings_queries_are_422_naming_the_field(
    api: Api, case: str, params: dict[str, str], fields: set[str]
) -> None:
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.WORKER)
    response = await api.client.get(f"/machines/{machine_id}/readings", params=params, headers=headers)
    assert_problem(response, fields)


async def test_limits_are_inclusive(api: Api) -> None:
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.WORKER)
    url = f"/machines/{machine_id}/readings"
    for params in (
        _with(tags=",".join(f"t{i}" for i in range(20))),
        _with(bucket="1m", to="2026-11-28T06:00:00Z"),
        _with(bucket="raw", to="2026-11-26T12:00:00Z"),
        _with(bucket="1d", from_="2016-11-26T06:00:00Z"),
    ):
        response = await api.client.get(url, params=params, headers=headers)
        assert response.status_code == 200, (params, response.text)


STATES_ERRORS = [
    ("missing from", _with(from_=MISSING, tags=MISSING), {"from"}),
    ("missing to", _with(to=MISSING, tags=MISSING), {"to"}),
    ("from equals to", _with(to=BASE["from"], tags=MISSING), {"from"}),
    ("from after to", _with(from_="2026-11-27T06:00:00Z", tags=MISSING), {"from"}),
    ("over 366 days", _with(to="2027-11-28T06:00:00Z", tags=MISSING), {"from"}),
]


@pytest.mark.parametrize(("case", "params", "fields"), STATES_ERRORS, ids=[case[0] for case in STATES_ERRORS])
async def test_bad_state_windows_are_422_naming_the_field(
    api: Api, case: str, params: dict[str, str], fields: set[str]
) -> None:
    machine_id = (await api.add(make_machine)).id
    headers = await api.actor(Role.WORKER)
    assert_problem(await api.client.get(f"/machines/{machine_id}/states", params=params, headers=headers), fields)


@pytest.mark.parametrize(
    ("path", "params"),
    [("latest", {}), ("readings", BASE), ("readings", {**BASE, "bucket": "raw"}), ("states", _with(tags=MISSING))],
)
async def test_unknown_machine_is_404(api: Api, path: str, params: dict[str, str]) -> None:
    headers = await api.actor(Role.WORKER)
    response = await api.client.get(f"/machines/4242/{path}", params=params, headers=headers)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


async def test_latest_values_and_the_current_state(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session)).id
        other = (await make_machine(session, "other")).id
        quiet = (await make_machine(session, "quiet")).id
        await session.execute(
            insert(MachineLatest),
            [
                {"machine_id": machine_id, "tag": "temp", "ts": T0 + timedelta(seconds=5), "value": 212.5},
                {"machine_id": machine_id, "tag": "cycle_count", "ts": T0 + timedelta(seconds=3), "value": 10234},
                {"machine_id": machine_id, "tag": "door", "ts": T0, "value": 1.0},
                {"machine_id": other, "tag": "alpha", "ts": T0, "value": 5.0},
            ],
        )
        # A failed read: no value, quality bad (2).
        pressure = {"machine_id": machine_id, "tag": "pressure", "ts": T0 + timedelta(seconds=4), "value": None}
        await session.execute(insert(MachineLatest), [pressure | {"quality": 2}])
        # The 07:30 row repeats idle (a late sample): the machine has been idle since 07:00.
        await add_states(
            session,
            machine_id,
            [
                (T0, MachineState.RUNNING),
                (T0 + timedelta(hours=1), MachineState.IDLE),
                (T0 + timedelta(hours=1, minutes=30), MachineState.IDLE),
            ],
        )
        await add_states(session, other, [(T0 + timedelta(hours=5), MachineState.ALARM)])
    headers = await api.actor(Role.WORKER)

    body = (await api.client.get(f"/machines/{machine_id}/latest", headers=headers)).json()
    assert body == {
        "machine_id": machine_id,
        "values": [
            {"tag": "cycle_count", "ts": "2026-11-26T06:00:03Z", "value": 10234.0, "quality": "good"},
            {"tag": "door", "ts": "2026-11-26T06:00:00Z", "value": 1.0, "quality": "good"},
            {"tag": "pressure", "ts": "2026-11-26T06:00:04Z", "value": None, "quality": "bad"},
            {"tag": "temp", "ts": "2026-11-26T06:00:05Z", "value": 212.5, "quality": "good"},
        ],
        "state": {"state": "idle", "since": "2026-11-26T07:00:00Z"},
    }
    await api.add(add_states, machine_id, [(T0 + timedelta(hours=2), MachineState.RUNNING)])
    state = (await api.client.get(f"/machines/{machine_id}/latest", headers=headers)).json()["state"]
    assert state == {"state": "running", "since": "2026-11-26T08:00:00Z"}
    empty = (await api.client.get(f"/machines/{quiet}/latest", headers=headers)).json()
    assert empty == {"machine_id": quiet, "values": [], "state": None}


def at(hour: int, minute: int = 0) -> datetime:
    return T0.replace(hour=hour, minute=minute)


async def timeline(
    api: Api, machine_id: int, start: datetime, end: datetime, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    headers = headers or await api.actor(Role.WORKER)
    response = await api.client.get(
        f"/machines/{machine_id}/states", params={"from": iso(start), "to": iso(end)}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def interval(state: str, start: datetime, end: datetime) -> dict[str, Any]:
    zulu = {moment: iso(moment).replace("+00:00", "Z") for moment in (start, end)}
    return {"state": state, "start": zulu[start], "end": zulu[end], "duration_s": (end - start).total_seconds()}


def totals(**seconds: float) -> dict[str, float]:
    return {state.value: seconds.get(state.value, 0.0) for state in MachineState}


async def test_state_timeline_with_hand_computed_durations(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session)).id
        other = (await make_machine(session, "other")).id
        await add_states(
            session,
            machine_id,
            [
                (at(5), MachineState.RUNNING),
                (at(6, 30), MachineState.IDLE),
                (at(6, 45), MachineState.ALARM),
                (at(7), MachineState.ALARM),
                (at(7, 20), MachineState.RUNNING),
                (at(9), MachineState.OFF),
            ],
        )
        await add_states(session, other, [(at(6, 10), MachineState.SETUP)])
    headers = await api.actor(Role.WORKER)  # before freezing the clock (see the next test)
    api.set_now(at(12))

    # Running since 05:00 is in force at 06:00; the repeated alarm at 07:00 is no change; 09:00 is after `to`.
    body = await timeline(api, machine_id, at(6), at(8), headers)
    assert (body["machine_id"], body["from"], body["to"]) == (
        machine_id,
        "2026-11-26T06:00:00Z",
        "2026-11-26T08:00:00Z",
    )
    assert body["timeline"] == [
        interval("running", at(6), at(6, 30)),
        interval("idle", at(6, 30), at(6, 45)),
        interval("alarm", at(6, 45), at(7, 20)),
        interval("running", at(7, 20), at(8)),
    ]
    assert [item["duration_s"] for item in body["timeline"]] == [1800, 900, 2100, 2400]
    assert body["totals"] == totals(running=4200, idle=900, alarm=2100)

    # A change exactly at `from` opens the timeline; `from` in another zone means the same instant.
    istanbul = timezone(timedelta(hours=3))
    body = await timeline(api, machine_id, at(6, 30).astimezone(istanbul), at(7), headers)
    assert body["from"] == "2026-11-26T06:30:00Z"
    assert body["timeline"] == [interval("idle", at(6, 30), at(6, 45)), interval("alarm", at(6, 45), at(7))]

    # Nothing known before the first change: the timeline starts there.
    body = await timeline(api, machine_id, at(4), at(5, 30), headers)
    assert body["timeline"] == [interval("running", at(5), at(5, 30))]
    assert body["totals"] == totals(running=1800)


async def test_the_open_interval_ends_at_the_app_clock(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session)).id
        await add_states(
            session,
            machine_id,
            [(at(5), MachineState.SETUP), (at(6, 40), MachineState.RUNNING), (at(7, 55), MachineState.IDLE)],
        )
    # Log in before freezing the clock: a token issued at a frozen past time would be expired by the wall clock.
    headers = await api.actor(Role.WORKER)
    api.set_now(at(7, 50))
    body = await timeline(api, machine_id, at(6), at(8), headers)
    # The 07:55 row lies after the app's now (a clock ahead on the machine): not part of the timeline yet.
    assert body["timeline"] == [interval("setup", at(6), at(6, 40)), interval("running", at(6, 40), at(7, 50))]
    assert body["totals"] == totals(setup=2400, running=4200)

    api.set_now(at(5, 30))
    future = await timeline(api, machine_id, at(6), at(8), headers)
    assert (future["timeline"], future["totals"]) == ([], totals())


async def test_buckets_aggregate_good_values_and_count_the_others_raw_says_which(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session, "press-quality")).id
        # 08:00:00 good 10; :10 uncertain 50; :20 bad without a value; :30 good 20 (Reading rows, as ingested).
        rows = [(0, 10.0, None), (10, 50.0, 1), (20, None, 2), (30, 20.0, None)]
        await session.execute(
            insert(Reading),
            [
                {"machine_id": machine_id, "tag": "temp", "ts": T0 + timedelta(seconds=s), "value": v, "quality": q}
                for s, v, q in rows
            ],
        )
    headers = await api.actor(Role.WORKER)

    def zulu(moment: datetime) -> str:
        return iso(moment).replace("+00:00", "Z")

    url = f"/machines/{machine_id}/readings"
    window = {"tags": "temp", "from": iso(T0), "to": iso(T0 + timedelta(minutes=1))}
    buckets = await api.client.get(
        url, params=window | {"bucket": "1m", "agg": "avg,min,max,last,count"}, headers=headers
    )
    assert buckets.status_code == 200, buckets.text
    [point] = buckets.json()["series"][0]["points"]
    assert point == {"t": zulu(T0), "avg": 15.0, "min": 10.0, "max": 20.0, "last": 20.0, "count": 2, "not_good": 2}
    raw = (await api.client.get(url, params=window | {"bucket": "raw"}, headers=headers)).json()
    assert raw["series"][0]["points"] == [
        {"t": zulu(T0), "value": 10.0},
        {"t": zulu(T0 + timedelta(seconds=10)), "value": 50.0, "quality": "uncertain"},
        {"t": zulu(T0 + timedelta(seconds=20)), "value": None, "quality": "bad"},
        {"t": zulu(T0 + timedelta(seconds=30)), "value": 20.0},
    ]
    good = (await api.client.get(url, params=window | {"bucket": "raw", "quality": "good"}, headers=headers)).json()
    assert [point["value"] for point in good["series"][0]["points"]] == [10.0, 20.0]
    refused = await api.client.get(url, params=window | {"quality": "best"}, headers=headers)
    assert refused.status_code == 422
