"""The plant calendar and OEE by shift, production day and week across Europe/Berlin's 2026 clock changes, a holiday
and an unplanned Saturday, over HTTP on SQLite and PostgreSQL; every figure computed by hand.

The DST weeks (the scenario and its figures) are in tests/support/plant.py, shared with the TimescaleDB tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from core.contract import MachineState
from core.models import Role
from tests.support.api import Api, Headers
from tests.support.db import Database
from tests.support.factories import add_readings, add_states, make_machine
from tests.support.plant import (
    AUTUMN,
    DST_WEEKS,
    EVERY_DAY,
    IDEAL_CYCLE_TIME_S,
    IDLE,
    MONDAY_TO_FRIDAY,
    ORDINARY_DAY,
    ORDINARY_GOOD,
    ORDINARY_PARTS,
    ORDINARY_SHIFT,
    RUN,
    SETUP,
    SPRING,
    DstWeek,
    Figures,
    assert_dst_week,
    assert_figures,
    assert_sums,
    counter_rows,
    oee_by,
    plant_app,
    seed_dst_week,
    shift_counts,
    wall,
)
from tests.support.planttime import utc

OFF = MachineState.OFF


@pytest.fixture
async def app(database: Database) -> AsyncIterator[Api]:
    """The app of a plant in Berlin."""
    async with plant_app(database, "Europe/Berlin", utc(2026, 12, 1, 12)) as api:
        yield api


async def post(app: Api, url: str, body: dict[str, Any], headers: Headers) -> dict[str, Any]:
    response = await app.client.post(url, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def shifts_of(app: Api, headers: Headers, start: str, end: str) -> list[dict[str, Any]]:
    response = await app.client.get("/calendar/shifts", params={"from": start, "to": end}, headers=headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def times(row: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(row["start"]), datetime.fromisoformat(row["end"])


# --- across a clock change -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("week", list(DST_WEEKS.values()), ids=list(DST_WEEKS))
async def test_the_night_shift_of_a_clock_change_lasts_what_the_clocks_say(app: Api, week: DstWeek) -> None:
    planner = await app.actor(Role.PLANNER)
    await post(app, "/calendar/patterns", EVERY_DAY, planner)
    saturday = week.saturday_date.isoformat()
    sunday = (week.saturday_date + timedelta(days=1)).isoformat()
    rows = await shifts_of(app, planner, f"{saturday}T06:00:00", f"{sunday}T06:00:00")
    # Early and late are ordinary (8 h - 30 min = 450); the night is 7 h - 30 = 390 in spring, 9 h - 30 = 510 in
    # autumn.
    assert [(row["name"], row["day"], row["planned_min"]) for row in rows] == [
        ("early", saturday, 450.0),
        ("late", saturday, 450.0),
        ("night", saturday, week.night_planned_min),
    ]
    assert times(rows[2]) == week.night


@pytest.mark.parametrize("week", list(DST_WEEKS.values()), ids=list(DST_WEEKS))
async def test_oee_by_shift_day_and_week_across_a_clock_change(app: Api, week: DstWeek) -> None:
    planner = await app.actor(Role.PLANNER)
    await post(app, "/calendar/patterns", EVERY_DAY, planner)
    machine_id = await seed_dst_week(app, planner, week)
    by_shift, by_day, by_week = [
        await oee_by(app, planner, machine_id, week, group_by) for group_by in ("shift", "day", "week")
    ]
    assert_dst_week(week, by_shift, by_day, by_week)


@pytest.mark.parametrize(
    ("week", "events", "minor_stops"),
    [
        # 01:40 CET to 03:10 CEST: 30 minutes (1 800 s), though the wall clock moved 90.
        (SPRING, [(utc(2026, 3, 29, 0, 40), 1800.0, ["setup"], "setup")], 0),
        # 02:50 CEST to 02:10 CET: 20 minutes (1 200 s), though the wall clock went back 40; then the 90 s idle.
        (AUTUMN, [(utc(2026, 10, 25, 0, 50), 1200.0, ["alarm"], None)], 1),
    ],
    ids=list(DST_WEEKS),
)
async def test_stops_across_a_clock_change_last_what_they_lasted(
    app: Api, week: DstWeek, events: list[tuple[datetime, float, list[str], str | None]], minor_stops: int
) -> None:
    planner = await app.actor(Role.PLANNER)
    await post(app, "/calendar/patterns", EVERY_DAY, planner)
    machine_id = await seed_dst_week(app, planner, week)
    start, end = week.night
    response = await app.client.get(
        f"/machines/{machine_id}/downtimes",
        params={"from": start.isoformat(), "to": end.isoformat()},
        headers=planner,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [
        (datetime.fromisoformat(row["start"]), row["duration_s"], row["states"], row["reason_code"])
        for row in body["events"]
    ] == events
    assert body["minor_stops"] == minor_stops


# --- a holiday and an unplanned Saturday ---------------------------------------------------------------------------

# Week 14 of 2026, Monday 30 March to Sunday 5 April (CEST all week). The plant works Monday to Friday; Good Friday,
# 3 April, is a holiday; Saturday 4 April gets an extra shift 06:00-14:00 (no break: 480 minutes).
HOLY_MONDAY = date(2026, 3, 30)
GOOD_FRIDAY = date(2026, 4, 3)
SATURDAY = date(2026, 4, 4)
# The extra shift: a 90 s idle at 08:00 (a minor stop), a 20 min setup at 09:00 (classified `setup`); 414 parts, 405
# good. Scheduled 480, run 480 - 20 = 460: A = 460 / 480; P = 414 x 1 min / 460 min = 0.9; Q = 405 / 414;
# OEE = 405 / 480.
EXTRA_SHIFT = Figures(480, 460, {"setup": 20.0}, 1, 1.5, 414, 405, 460 / 480, 414 / 460, 405 / 414, 405 / 480)
# Monday to Thursday (4 x 1 350 = 5 400) and the extra shift (480): 5 880 scheduled, 5 880 - 20 = 5 860 run;
# 4 x 1 215 + 414 = 5 274 parts (= 0.9 x 5 860), 4 x 1 188 + 405 = 5 157 good.
HOLIDAY_WEEK = Figures(
    5880, 5860, {"setup": 20.0}, 1, 1.5, 5274, 5157, 5860 / 5880, 5274 / 5860, 5157 / 5274, 5157 / 5880
)


async def holiday_week(app: Api, *, holiday_parts: int = 0) -> tuple[int, Headers]:
    """The Monday-to-Friday calendar, the holiday, the extra Saturday and the press: off on the holiday, unless
    someone ran it from 08:00 to 12:00 and made `holiday_parts` (all good)."""
    planner = await app.actor(Role.PLANNER)
    await post(app, "/calendar/patterns", MONDAY_TO_FRIDAY, planner)
    await post(app, "/calendar/exceptions", {"day": GOOD_FRIDAY.isoformat(), "kind": "non_working"}, planner)
    extra = {
        "day": SATURDAY.isoformat(),
        "kind": "extra_shift",
        "shift_name": "extra",
        "start": "06:00",
        "end": "14:00",
    }
    await post(app, "/calendar/exceptions", extra, planner)
    machine = await app.add(make_machine, "press-holy-week", ideal_cycle_time_s=IDEAL_CYCLE_TIME_S)
    await app.add(
        add_states,
        machine.id,
        [
            (wall(HOLY_MONDAY, 6), RUN),
            (wall(GOOD_FRIDAY, 6), OFF),  # Thursday's night shift is over: nobody works on the holiday
            (wall(SATURDAY, 6), RUN),
            (wall(SATURDAY, 8), IDLE),
            (wall(SATURDAY, 8, 1, 30), RUN),
            (wall(SATURDAY, 9), SETUP),
            (wall(SATURDAY, 9, 20), RUN),
            (wall(SATURDAY, 14), OFF),
        ],
    )
    counts = [(moment, ORDINARY_PARTS, ORDINARY_GOOD) for _, _, moment in shift_counts(HOLY_MONDAY, 4)]
    if holiday_parts:
        await app.add(add_states, machine.id, [(wall(GOOD_FRIDAY, 8), RUN), (wall(GOOD_FRIDAY, 12), OFF)])
        counts.append((wall(GOOD_FRIDAY, 11, 59), holiday_parts, holiday_parts))
    counts.append((wall(SATURDAY, 13, 59), 414, 405))
    await app.add(add_readings, machine.id, counter_rows(counts, wall(HOLY_MONDAY, 6)))
    response = await app.client.post(
        f"/machines/{machine.id}/downtimes/classify",
        json={"start": wall(SATURDAY, 9).isoformat(), "reason_code": "setup"},
        headers=planner,
    )
    assert response.status_code == 200, response.text
    return machine.id, planner


async def test_a_holiday_plans_nothing_and_an_extra_saturday_shift_is_planned(app: Api) -> None:
    _, planner = await holiday_week(app)
    rows = await shifts_of(app, planner, "2026-04-02T06:00:00", "2026-04-06T06:00:00")
    # Thursday's three shifts (the night one ending on the holiday morning), nothing on Friday, the extra Saturday.
    assert [(row["name"], row["day"], row["planned_min"]) for row in rows] == [
        ("early", "2026-04-02", 450.0),
        ("late", "2026-04-02", 450.0),
        ("night", "2026-04-02", 450.0),
        ("extra", "2026-04-04", 480.0),
    ]
    assert times(rows[2]) == (wall(date(2026, 4, 2), 22), wall(GOOD_FRIDAY, 6))
    assert times(rows[3]) == (wall(SATURDAY, 6), wall(SATURDAY, 14))


async def test_oee_of_a_week_with_a_holiday_and_an_extra_saturday(app: Api) -> None:
    machine_id, planner = await holiday_week(app)
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-03-30T06:00:00",
        "to": "2026-04-06T06:00:00",
    }

    async def oee(group_by: str) -> dict[str, Any]:
        response = await app.client.get("/oee", params=window | {"group_by": group_by}, headers=planner)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    by_shift, by_day, by_week = await oee("shift"), await oee("day"), await oee("week")
    thursday_on = ["2026-03-30", "2026-03-31", "2026-04-01", "2026-04-02"]
    assert [row["label"] for row in by_shift["rows"]] == [
        *(f"{day} {name}" for day in thursday_on for name in ("early", "late", "night")),
        "2026-04-04 extra",
    ]
    for row in by_shift["rows"][:-1]:
        assert_figures(row, ORDINARY_SHIFT)
    assert_figures(by_shift["rows"][-1], EXTRA_SHIFT)
    # No row for the holiday, nor for Sunday: neither plans anything.
    assert [row["label"] for row in by_day["rows"]] == [*thursday_on, "2026-04-04"]
    for row in by_day["rows"]:
        assert_figures(row, EXTRA_SHIFT if row["label"] == "2026-04-04" else ORDINARY_DAY)
        assert_sums(row, [shift for shift in by_shift["rows"] if shift["label"].startswith(row["label"])])
    [week] = by_week["rows"]
    assert week["label"] == "2026-W14"
    assert_figures(week, HOLIDAY_WEEK)
    assert_sums(week, by_day["rows"])
    assert_figures(by_week["total"], HOLIDAY_WEEK)


async def test_the_holiday_alone_plans_nothing(app: Api) -> None:
    machine_id, planner = await holiday_week(app)
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-04-03T06:00:00",
        "to": "2026-04-04T06:00:00",
    }
    for group_by in ("shift", "day"):
        response = await app.client.get("/oee", params=window | {"group_by": group_by}, headers=planner)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rows"] == [], group_by
        total = body["total"]
        assert (total["scheduled_min"], total["planned_production_min"], total["run_min"]) == (0, 0, 0)
        assert (total["total_count"], total["good_count"]) == (0, 0)
        assert (total["availability"], total["performance"], total["quality"], total["oee"]) == (None,) * 4


async def test_parts_made_on_a_holiday_do_not_break_the_sum_of_days(app: Api) -> None:
    machine_id, planner = await holiday_week(app, holiday_parts=100)
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-03-30T06:00:00",
        "to": "2026-04-06T06:00:00",
    }
    by_day = (await app.client.get("/oee", params=window | {"group_by": "day"}, headers=planner)).json()
    by_week = (await app.client.get("/oee", params=window | {"group_by": "week"}, headers=planner)).json()
    # No day plans Good Friday, so its 100 parts are in no day: the days make 4 x 1 215 + 414 = 5 274 parts, as
    # without them, and the week, their sum, the same (performance 5 274 x 1 min / 5 860 min = 0.9, not
    # 5 374 / 5 860 = 0.917 from parts no planned minute made).
    assert sum(row["total_count"] for row in by_day["rows"]) == 5274
    [week] = by_week["rows"]
    assert (week["total_count"], week["good_count"]) == (5274, 5157)
    assert week["performance"] == pytest.approx(5274 / 5860)


async def test_an_extra_shift_overlapping_the_night_shift_is_refused(app: Api) -> None:
    planner = await app.actor(Role.PLANNER)
    await post(app, "/calendar/patterns", MONDAY_TO_FRIDAY, planner)
    # Friday 3 April's night shift runs to Saturday 06:00; an extra Saturday shift from 04:00 overlaps it by 2 h.
    # Accepted, GET /oee plans Friday's production day 3 x 450 = 1 350 min and Saturday's (04:00-12:00) 480 min, the
    # night shift's 04:00-06:00 counted in both: the days sum to 1 830 min, their week to 1 350 + 480 - 120 = 1 710.
    early = {"day": "2026-04-04", "kind": "extra_shift", "shift_name": "extra", "start": "04:00", "end": "12:00"}
    response = await app.client.post("/calendar/exceptions", json=early, headers=planner)
    assert (response.status_code, response.json().get("code")) == (422, "overlapping_shifts"), response.text


async def test_a_pattern_overlapping_a_planned_extra_shift_is_refused(
    app: Api,
) -> None:
    planner = await app.actor(Role.PLANNER)
    # An extra Saturday shift 04:00-12:00 planned first; then a Monday-Friday pattern whose Friday night shift runs
    # to Saturday 06:00 would overlap it: refused, naming the shifts.
    extra = {"day": "2026-04-04", "kind": "extra_shift", "shift_name": "extra", "start": "04:00", "end": "12:00"}
    await post(app, "/calendar/exceptions", extra, planner)
    refused = await app.client.post("/calendar/patterns", json=MONDAY_TO_FRIDAY, headers=planner)
    assert (refused.status_code, refused.json()["code"]) == (422, "overlapping_shifts"), refused.text
    assert "extra" in refused.json()["detail"]
    # A pattern from the week after is no concern of that Saturday's.
    later = MONDAY_TO_FRIDAY | {"valid_from": "2026-04-06"}
    assert (await app.client.post("/calendar/patterns", json=later, headers=planner)).status_code == 201
    # Another extra shift that overlaps nothing is accepted.
    sunday = {"day": "2026-04-05", "kind": "extra_shift", "shift_name": "extra", "start": "13:00", "end": "17:00"}
    assert (await app.client.post("/calendar/exceptions", json=sunday, headers=planner)).status_code == 201
