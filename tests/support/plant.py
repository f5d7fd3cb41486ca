"""A plant in Europe/Berlin around its 2026 clock changes: OEE by shift, production day and week, seeded the same way
and checked against the same hand-computed figures on every database tier (tests/api/test_plant_dst.py on SQLite and
PostgreSQL, tests/integration/test_timescale_plant_days.py on TimescaleDB).

The plant runs three shifts every day from Monday 2 March 2026: early 06:00-14:00 (break 10:00-10:30), late
14:00-22:00 (break 18:00-18:30) and night 22:00-06:00 (break 02:00-02:30), 8 h - 30 min = 450 planned minutes each on
an ordinary day. A shift belongs to the production day it starts on, and lasts what the clocks say (core/calendar.py):

- Spring: clocks go forward in Saturday 28 March's night (02:00 CET becomes 03:00 CEST, at 01:00 UTC). Saturday's
  night shift runs from 22:00 CET (21:00 UTC) to 06:00 CEST (04:00 UTC): 7 h. Its break begins at 02:00, a wall time
  that does not exist that night, read with the offset from before the change: 02:00 CET = 01:00 UTC = 03:00 CEST,
  to 02:30 CET = 01:30 UTC = 03:30 CEST. Planned: 7 h - 30 min = 390 min.
- Autumn: clocks go back in Saturday 24 October's night (03:00 CEST becomes 02:00 CET, at 01:00 UTC). Saturday's
  night shift runs from 22:00 CEST (20:00 UTC) to 06:00 CET (05:00 UTC): 9 h. Its break is at the first 02:00 (CEST,
  00:00 UTC) to the first 02:30 (00:30 UTC). Planned: 9 h - 30 min = 510 min.

The press (ideal cycle time 60 s) runs all week, breaks included. Its counters are read in the last minute of every
shift (13:59, 21:59, 05:59 local time). An ordinary shift makes 405 parts, 396 of them good: A = 450 / 450 = 1,
P = 405 x 1 min / 450 min = 0.9, Q = 396 / 405, OEE = 396 / 450 = 0.88. An ordinary day is three of them: 1 350
scheduled minutes, 1 215 parts, 1 188 good. Only Saturday's night shift differs; see `SPRING` and `AUTUMN`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from core.contract import MachineState
from core.settings import OeeSettings, TrackingSettings
from tests.support.api import Api, Headers, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import add_readings, add_states, make_machine
from tests.support.planttime import BERLIN, utc


@contextlib.asynccontextmanager
async def plant_app(database: Database, zone: str, now: datetime) -> AsyncIterator[Api]:
    """The app of a plant in `zone` at `now`; a state holds until the next one (no silence rule)."""
    settings = make_settings(database.url).model_copy(
        update={"tracking": TrackingSettings(plant_timezone=zone), "oee": OeeSettings(oee_max_silence_s=0)}
    )
    async with running_api(database, settings) as api:
        api.set_now(now)
        yield api


RUN, IDLE, SETUP, ALARM = MachineState.RUNNING, MachineState.IDLE, MachineState.SETUP, MachineState.ALARM
IDEAL_CYCLE_TIME_S = 60.0
ORDINARY_PARTS, ORDINARY_GOOD = 405, 396


def three_shifts(weekdays: list[int], valid_from: str = "2026-03-02") -> dict[str, Any]:
    """The body of POST /calendar/patterns: the plant's three shifts on `weekdays` (0 = Monday)."""
    return {
        "valid_from": valid_from,
        "name": "Drei Schichten",
        "shifts": [
            {"name": "early", "weekdays": weekdays, "start": "06:00", "end": "14:00",
             "breaks": [{"start": "10:00", "end": "10:30"}]},
            {"name": "late", "weekdays": weekdays, "start": "14:00", "end": "22:00",
             "breaks": [{"start": "18:00", "end": "18:30"}]},
            {"name": "night", "weekdays": weekdays, "start": "22:00", "end": "06:00",
             "breaks": [{"start": "02:00", "end": "02:30"}]},
        ],
    }  # fmt: skip


EVERY_DAY = three_shifts([0, 1, 2, 3, 4, 5, 6])
MONDAY_TO_FRIDAY = three_shifts([0, 1, 2, 3, 4])


def wall(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A Berlin wall time (not inside a skipped or repeated hour) as a UTC instant."""
    return datetime.combine(day, time(hour, minute, second), tzinfo=BERLIN).astimezone(UTC)


@dataclass(frozen=True)
class Figures:
    """What one row of GET /oee must say, computed by hand (minutes; factors as fractions)."""

    scheduled_min: float
    run_min: float
    losses_by_reason_min: dict[str, float]
    minor_stops: int
    minor_stop_min: float
    total_count: int
    good_count: int
    availability: float
    performance: float
    quality: float
    oee: float


def assert_figures(row: dict[str, Any], expected: Figures) -> None:
    """A row of GET /oee against its hand computation (no planned stops, no unknown time in these scenarios)."""
    label = row["label"]
    assert (row["planned_stop_min"], row["unknown_min"]) == (0, 0), label
    assert row["scheduled_min"] == expected.scheduled_min, label
    assert row["planned_production_min"] == expected.scheduled_min, label
    assert row["run_min"] == expected.run_min, label
    assert row["losses_by_reason_min"] == expected.losses_by_reason_min, label
    assert (row["minor_stops"], row["minor_stop_min"]) == (expected.minor_stops, expected.minor_stop_min), label
    assert (row["total_count"], row["good_count"]) == (expected.total_count, expected.good_count), label
    assert row["availability"] == pytest.approx(expected.availability), label
    assert row["performance"] == pytest.approx(expected.performance), label
    assert row["quality"] == pytest.approx(expected.quality), label
    assert row["oee"] == pytest.approx(expected.oee), label


# 450 scheduled minutes, running all along; 405 parts at 1 min each in 450 min; 396 good.
ORDINARY_SHIFT = Figures(450, 450, {}, 0, 0, 405, 396, 450 / 450, 405 / 450, 396 / 405, 396 / 450)
# Three ordinary shifts: 3 x 450 = 1 350 min, 3 x 405 = 1 215 parts, 3 x 396 = 1 188 good.
ORDINARY_DAY = Figures(1350, 1350, {}, 0, 0, 1215, 1188, 1, 1215 / 1350, 1188 / 1215, 1188 / 1350)


@dataclass(frozen=True)
class DstWeek:
    """One ISO week of the plant with a clock change in Saturday's night shift, and its figures by hand."""

    name: str
    monday: date
    # Saturday's night shift as instants: what the clocks say.
    night: tuple[datetime, datetime]
    night_planned_min: float
    # The press's state changes inside that night shift (it runs before and after them).
    night_states: tuple[tuple[datetime, MachineState], ...]
    night_parts: int
    night_good: int
    # The start of the stop classified `setup`, if any.
    setup_at: datetime | None
    night_figures: Figures
    saturday: tuple[datetime, datetime]
    saturday_figures: Figures
    week_label: str
    week_figures: Figures

    @property
    def saturday_date(self) -> date:
        """Saturday's local date: the production day of the night shift with the clock change."""
        return self.monday + timedelta(days=5)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """Monday's early shift start to the next Monday's: the week's 21 shifts and nothing else."""
        return wall(self.monday, 6), wall(self.monday + timedelta(days=7), 6)


SPRING = DstWeek(
    name="spring forward",
    monday=date(2026, 3, 23),
    night=(utc(2026, 3, 28, 21), utc(2026, 3, 29, 4)),  # 22:00 CET to 06:00 CEST: 7 h
    night_planned_min=390,  # 7 h - 30 min break
    night_states=(
        # A setup from 01:40 CET to 03:10 CEST: 90 minutes on the wall clock, 30 in fact, the last 10 of them in the
        # break (03:00-03:30 CEST), which is not planned time: 20 minutes of loss.
        (utc(2026, 3, 29, 0, 40), SETUP),
        (utc(2026, 3, 29, 1, 10), RUN),
    ),
    night_parts=333,
    night_good=324,
    setup_at=utc(2026, 3, 29, 0, 40),
    # 390 scheduled; the setup's 20 minutes outside the break (classified) are an availability loss: run 370.
    # A = 370 / 390; P = 333 x 1 min / 370 min = 0.9; Q = 324 / 333; OEE = 324 / 390.
    night_figures=Figures(390, 370, {"setup": 20.0}, 0, 0, 333, 324, 370 / 390, 333 / 370, 324 / 333, 324 / 390),
    # Saturday's production day: 06:00 CET (05:00 UTC) to Sunday 06:00 CEST (04:00 UTC), 23 hours.
    saturday=(utc(2026, 3, 28, 5), utc(2026, 3, 29, 4)),
    # early + late + night: 450 + 450 + 390 = 1 290 scheduled, 1 290 - 20 = 1 270 run,
    # 405 + 405 + 333 = 1 143 parts (= 0.9 x 1 270), 396 + 396 + 324 = 1 116 good.
    saturday_figures=Figures(
        1290, 1270, {"setup": 20.0}, 0, 0, 1143, 1116, 1270 / 1290, 1143 / 1270, 1116 / 1143, 1116 / 1290
    ),
    week_label="2026-W13",
    # Six ordinary days and Saturday: 6 x 1 350 + 1 290 = 9 390 scheduled, 9 390 - 20 = 9 370 run,
    # 6 x 1 215 + 1 143 = 8 433 parts (= 0.9 x 9 370), 6 x 1 188 + 1 116 = 8 244 good.
    week_figures=Figures(
        9390, 9370, {"setup": 20.0}, 0, 0, 8433, 8244, 9370 / 9390, 8433 / 9370, 8244 / 8433, 8244 / 9390
    ),
)

AUTUMN = DstWeek(
    name="fall back",
    monday=date(2026, 10, 19),
    night=(utc(2026, 10, 24, 20), utc(2026, 10, 25, 5)),  # 22:00 CEST to 06:00 CET: 9 h
    night_planned_min=510,  # 9 h - 30 min break
    night_states=(
        # An alarm from 02:50 CEST to 02:10 CET: the clock ends 40 minutes before it began, 20 minutes in fact.
        (utc(2026, 10, 25, 0, 50), ALARM),
        (utc(2026, 10, 25, 1, 10), RUN),
        # 90 s idle at 02:20 CET, the second 02:20 of the night: a minor stop.
        (utc(2026, 10, 25, 1, 20), IDLE),
        (utc(2026, 10, 25, 1, 21, 30), RUN),
    ),
    night_parts=441,
    night_good=420,
    setup_at=None,
    # 510 scheduled; the 20-minute alarm nobody classified is an availability loss: run 490. A = 490 / 510;
    # P = 441 x 1 min / 490 min = 0.9 (the minor stop is inside it: 1.5 min); Q = 420 / 441; OEE = 420 / 510.
    night_figures=Figures(
        510, 490, {"unclassified": 20.0}, 1, 1.5, 441, 420, 490 / 510, 441 / 490, 420 / 441, 420 / 510
    ),
    # Saturday's production day: 06:00 CEST (04:00 UTC) to Sunday 06:00 CET (05:00 UTC), 25 hours.
    saturday=(utc(2026, 10, 24, 4), utc(2026, 10, 25, 5)),
    # 450 + 450 + 510 = 1 410 scheduled, 1 410 - 20 = 1 390 run, 405 + 405 + 441 = 1 251 parts (= 0.9 x 1 390),
    # 396 + 396 + 420 = 1 212 good.
    saturday_figures=Figures(
        1410, 1390, {"unclassified": 20.0}, 1, 1.5, 1251, 1212, 1390 / 1410, 1251 / 1390, 1212 / 1251, 1212 / 1410
    ),
    week_label="2026-W43",
    # 6 x 1 350 + 1 410 = 9 510 scheduled, 9 490 run, 6 x 1 215 + 1 251 = 8 541 parts (= 0.9 x 9 490),
    # 6 x 1 188 + 1 212 = 8 340 good.
    week_figures=Figures(
        9510, 9490, {"unclassified": 20.0}, 1, 1.5, 8541, 8340, 9490 / 9510, 8541 / 9490, 8340 / 8541, 8340 / 9510
    ),
)

DST_WEEKS = {week.name: week for week in (SPRING, AUTUMN)}


def shift_counts(monday: date, days: int) -> list[tuple[date, str, datetime]]:
    """(production day, shift, the moment its counters are read: its last minute) for `days` days from `monday`."""
    found = []
    for offset in range(days):
        day = monday + timedelta(days=offset)
        found += [
            (day, "early", wall(day, 13, 59)),
            (day, "late", wall(day, 21, 59)),
            (day, "night", wall(day + timedelta(days=1), 5, 59)),
        ]
    return found


def counter_rows(counts: list[tuple[datetime, int, int]], start: datetime) -> list[tuple[str, datetime, float]]:
    """Cycle and good counter readings: 0 at `start`, then running totals of each (moment, parts, good)."""
    rows: list[tuple[str, datetime, float]] = [("cycle_count", start, 0.0), ("good_count", start, 0.0)]
    parts = good = 0
    for moment, made, fine in counts:
        parts, good = parts + made, good + fine
        rows += [("cycle_count", moment, float(parts)), ("good_count", moment, float(good))]
    return rows


async def seed_dst_week(api: Api, planner: Headers, week: DstWeek) -> int:
    """A press that runs through the week (the calendar is posted apart), its night-shift stops and its counters,
    its setup classified; the press's id."""
    code = "press-" + week.name.replace(" ", "-")
    machine = await api.add(make_machine, code, ideal_cycle_time_s=IDEAL_CYCLE_TIME_S)
    start, _ = week.window
    await api.add(add_states, machine.id, [(start, RUN), *week.night_states])
    counts = [
        (moment, week.night_parts, week.night_good)
        if (day, name) == (week.saturday_date, "night")
        else (moment, ORDINARY_PARTS, ORDINARY_GOOD)
        for day, name, moment in shift_counts(week.monday, 7)
    ]
    await api.add(add_readings, machine.id, counter_rows(counts, start))
    if week.setup_at is not None:
        response = await api.client.post(
            f"/machines/{machine.id}/downtimes/classify",
            json={"start": week.setup_at.isoformat(), "reason_code": "setup"},
            headers=planner,
        )
        assert response.status_code == 200, response.text
    return machine.id


async def oee_by(api: Api, headers: Headers, machine_id: int, week: DstWeek, group_by: str) -> dict[str, Any]:
    """GET /oee of the press over the week's window, grouped by shift, day or week."""
    start, end = week.window
    response = await api.client.get(
        "/oee",
        params={"machine_id": machine_id, "group_by": group_by, "from": start.isoformat(), "to": end.isoformat()},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


SUMMED = ("scheduled_min", "planned_production_min", "run_min", "unclassified_min", "minor_stops", "minor_stop_min")


def assert_sums(whole: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """A row is the sum of its parts: every time and count adds up."""
    for name in (*SUMMED, "total_count", "good_count"):
        assert whole[name] == pytest.approx(sum(part[name] for part in parts)), (whole["label"], name)


def assert_dst_week(week: DstWeek, by_shift: dict[str, Any], by_day: dict[str, Any], by_week: dict[str, Any]) -> None:
    """OEE of the press by shift, day and week against the hand computation; shifts add up to days, days to the week."""
    saturday = week.saturday_date.isoformat()
    days = [(week.monday + timedelta(days=offset)).isoformat() for offset in range(7)]
    shifts = by_shift["rows"]
    assert [row["label"] for row in shifts] == [f"{day} {name}" for day in days for name in ("early", "late", "night")]
    for row in shifts:
        assert_figures(row, week.night_figures if row["label"] == f"{saturday} night" else ORDINARY_SHIFT)
    [night] = [row for row in shifts if row["label"] == f"{saturday} night"]
    assert (datetime.fromisoformat(night["start"]), datetime.fromisoformat(night["end"])) == week.night

    assert [row["label"] for row in by_day["rows"]] == days
    for row in by_day["rows"]:
        assert_figures(row, week.saturday_figures if row["label"] == saturday else ORDINARY_DAY)
        assert_sums(row, [shift for shift in shifts if shift["label"].startswith(row["label"])])
    [day] = [row for row in by_day["rows"] if row["label"] == saturday]
    assert (datetime.fromisoformat(day["start"]), datetime.fromisoformat(day["end"])) == week.saturday

    [row] = by_week["rows"]
    assert row["label"] == week.week_label
    assert_figures(row, week.week_figures)
    assert_sums(row, by_day["rows"])
    assert_sums(row, shifts)
    for body in (by_shift, by_day, by_week):
        assert_figures(body["total"], week.week_figures)
