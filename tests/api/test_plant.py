"""The plant calendar, downtime events and their classification, and OEE by shift and day over HTTP, on SQLite and
PostgreSQL; every figure computed by hand.

The plant is in Istanbul (UTC+3 all year). Monday 2026-11-30 runs three shifts with a 30-minute break each: early
06:00-14:00 (break 10:00), late 14:00-22:00 (break 18:00), night 22:00-06:00 (break 02:00). The press runs all day
except a 90-second idle at 08:00 (a minor stop), a 20-minute setup at 09:00 and a 10-minute alarm at 12:00; its cycle
counter reads 400 parts per shift, 390 / 400 / 380 good ones; the ideal cycle time is 60 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from core.contract import MachineState
from core.models import Issue, Role, StageEvent, StageEventKind, StageStatus, WorkOrderStage
from tests.support.api import Api, Headers
from tests.support.db import Database
from tests.support.factories import add_readings, add_states, make_machine, make_work_order
from tests.support.plant import plant_app
from tests.support.tracking import assign

PLANT = ZoneInfo("Europe/Istanbul")
MONDAY = datetime(2026, 11, 30, tzinfo=PLANT).date()
RUN, IDLE, SETUP, ALARM = MachineState.RUNNING, MachineState.IDLE, MachineState.SETUP, MachineState.ALARM
THREE_SHIFTS = {
    "valid_from": "2026-01-05",
    "name": "Üç vardiya",
    "shifts": [
        {"name": "early", "weekdays": [0, 1, 2, 3, 4], "start": "06:00", "end": "14:00",
         "breaks": [{"start": "10:00", "end": "10:30"}]},
        {"name": "late", "weekdays": [0, 1, 2, 3, 4], "start": "14:00", "end": "22:00",
         "breaks": [{"start": "18:00", "end": "18:30"}]},
        {"name": "night", "weekdays": [0, 1, 2, 3, 4], "start": "22:00", "end": "06:00",
         "breaks": [{"start": "02:00", "end": "02:30"}]},
    ],
}  # fmt: skip


def local(hour: int, minute: int = 0, second: int = 0, days: int = 0) -> datetime:
    """A plant-local time on Monday (or `days` later), as a UTC instant."""
    moment = datetime.combine(MONDAY + timedelta(days=days), time(hour, minute, second), tzinfo=PLANT)
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


@pytest.fixture
async def app(database: Database) -> AsyncIterator[Api]:
    """The app of a plant in Istanbul."""
    async with plant_app(database, "Europe/Istanbul", local(12, days=2)) as api:
        yield api


async def monday_press(app: Api) -> int:
    """The press of the scenario: its states and counters over Monday's production day."""
    machine = await app.add(make_machine, "press-7", ideal_cycle_time_s=60.0)
    await app.add(
        add_states,
        machine.id,
        [
            (local(6), RUN),
            (local(8), IDLE),
            (local(8, 1, 30), RUN),
            (local(9), SETUP),
            (local(9, 20), RUN),
            (local(12), ALARM),
            (local(12, 10), RUN),
        ],
    )
    # A reading lands in the shift it is read in: the last one of each shift a minute before its end.
    counts = [
        (local(6), 0, 0),
        (local(13, 59), 400, 390),
        (local(21, 59), 800, 790),
        (local(5, 59, days=1), 1200, 1170),
    ]
    await app.add(
        add_readings,
        machine.id,
        [row for ts, total, good in counts for row in (("cycle_count", ts, total), ("good_count", ts, good))],
    )
    return machine.id


async def with_calendar(app: Api, planner: Headers) -> dict[str, Any]:
    response = await app.client.post("/calendar/patterns", json=THREE_SHIFTS, headers=planner)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the calendar ------------------------------------------------------------------------------------------------


async def test_a_planner_sets_the_shift_pattern_and_everyone_reads_the_shifts(app: Api) -> None:
    planner, worker = await app.actor(Role.PLANNER), await app.actor(Role.WORKER)
    pattern = await with_calendar(app, planner)
    assert [(shift["name"], shift["weekday"]) for shift in pattern["shifts"][:3]] == [
        ("early", 0),
        ("late", 0),
        ("night", 0),
    ]
    calendar = (await app.client.get("/calendar", headers=worker)).json()
    assert calendar["timezone"] == "Europe/Istanbul"
    assert [row["id"] for row in calendar["patterns"]] == [pattern["id"]]
    shifts = await app.client.get(
        "/calendar/shifts", params={"from": "2026-11-30T00:00:00", "to": "2026-12-01T00:00:00"}, headers=worker
    )
    assert shifts.status_code == 200, shifts.text
    # Sunday's night shift does not exist (Monday to Friday); Monday's three, the night one ending on Tuesday.
    assert [(row["name"], row["day"], row["planned_min"]) for row in shifts.json()] == [
        ("early", "2026-11-30", 450.0),
        ("late", "2026-11-30", 450.0),
        ("night", "2026-11-30", 450.0),
    ]
    assert datetime.fromisoformat(shifts.json()[2]["end"]) == local(6, days=1)


async def test_the_calendar_refuses_what_cannot_be_meant(app: Api) -> None:
    planner, worker = await app.actor(Role.PLANNER), await app.actor(Role.WORKER)
    refused = await app.client.post("/calendar/patterns", json=THREE_SHIFTS, headers=worker)
    assert refused.status_code == 403
    overlapping = {
        "valid_from": "2026-02-02",
        "name": "x",
        "shifts": [
            {"name": "a", "weekdays": [0], "start": "06:00", "end": "15:00"},
            {"name": "b", "weekdays": [0], "start": "14:00", "end": "22:00"},
        ],
    }
    response = await app.client.post("/calendar/patterns", json=overlapping, headers=planner)
    assert (response.status_code, response.json()["code"]) == (422, "overlapping_shifts")
    outside = {
        "valid_from": "2026-02-02",
        "name": "x",
        "shifts": [{"name": "a", "weekdays": [0], "start": "06:00", "end": "14:00",
                    "breaks": [{"start": "13:45", "end": "14:15"}]}],
    }  # fmt: skip
    response = await app.client.post("/calendar/patterns", json=outside, headers=planner)
    assert (response.status_code, response.json()["code"]) == (422, "invalid_shift")
    await with_calendar(app, planner)
    again = await app.client.post("/calendar/patterns", json=THREE_SHIFTS, headers=planner)
    assert (again.status_code, again.json()["code"]) == (409, "pattern_exists")
    extra = await app.client.post(
        "/calendar/exceptions", json={"day": "2026-12-05", "kind": "extra_shift"}, headers=planner
    )
    assert extra.status_code == 422


async def test_a_holiday_and_an_extra_saturday_change_the_shifts(app: Api) -> None:
    planner = await app.actor(Role.PLANNER)
    await with_calendar(app, planner)
    holiday = await app.client.post(
        "/calendar/exceptions", json={"day": "2026-12-01", "kind": "non_working", "note": "Bayram"}, headers=planner
    )
    saturday = await app.client.post(
        "/calendar/exceptions",
        json={"day": "2026-12-05", "kind": "extra_shift", "shift_name": "extra", "start": "08:00", "end": "12:00"},
        headers=planner,
    )
    assert (holiday.status_code, saturday.status_code) == (201, 201)
    shifts = (
        await app.client.get(
            "/calendar/shifts", params={"from": "2026-12-01T00:00:00", "to": "2026-12-07T00:00:00"}, headers=planner
        )
    ).json()
    days = [(row["day"], row["name"]) for row in shifts]
    assert ("2026-12-01", "early") not in days
    assert ("2026-12-05", "extra") in days
    assert days[0] == ("2026-11-30", "night")  # Monday's night shift runs into the holiday morning
    removed = await app.client.delete(f"/calendar/exceptions/{holiday.json()['id']}", headers=planner)
    assert removed.status_code == 204


# --- downtime ----------------------------------------------------------------------------------------------------


async def test_stops_longer_than_the_threshold_are_downtime_and_shorter_ones_are_counted(app: Api) -> None:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    response = await app.client.get(
        f"/machines/{machine_id}/downtimes",
        params={"from": "2026-11-30T06:00:00", "to": "2026-11-30T14:00:00"},
        headers=planner,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(datetime.fromisoformat(row["start"]), row["duration_s"], row["states"]) for row in body["events"]] == [
        (local(9), 1200.0, ["setup"]),
        (local(12), 600.0, ["alarm"]),
    ]
    assert (body["minor_stops"], body["minor_stop_s"], body["micro_stop_s"]) == (1, 90.0, 120.0)
    assert all(row["reason_code"] is None for row in body["events"])


async def test_classify_split_and_reclassify_keep_their_history(app: Api) -> None:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    url = f"/machines/{machine_id}/downtimes/classify"
    # Two causes in a row: the first 10 minutes a mould change, the rest setup.
    split = await app.client.post(
        url,
        json={"start": iso(local(9)), "reason_code": "mould_change", "split_at": iso(local(9, 10))},
        headers=planner,
    )
    assert split.status_code == 200, split.text
    assert [(row["reason_code"], row["duration_s"]) for row in split.json()] == [("mould_change", 600.0), (None, 600.0)]
    rest = await app.client.post(url, json={"start": iso(local(9, 10)), "reason_code": "setup"}, headers=planner)
    assert [(row["reason_code"], row["duration_s"]) for row in rest.json()] == [
        ("mould_change", 600.0),
        ("setup", 600.0),
    ]
    again = await app.client.post(
        url, json={"start": iso(local(9, 10)), "reason_code": "material_shortage", "note": "granül"}, headers=planner
    )
    assert [row["reason_code"] for row in again.json()] == ["mould_change", "material_shortage"]
    history = await app.client.get(
        f"/machines/{machine_id}/downtimes/history",
        params={"from": "2026-11-30T00:00:00", "to": "2026-12-01T00:00:00"},
        headers=planner,
    )
    rows = history.json()
    assert [(row["reason_code"], row["replaced_at"] is not None) for row in rows] == [
        ("mould_change", False),
        ("setup", True),
        ("material_shortage", False),
    ]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"reason_code": "short_shot"}, 422, "not_a_downtime_reason"),
        ({"reason_code": "no_such_reason"}, 422, "unknown_reason"),
        ({"reason_code": "setup", "split_at": "2026-11-30T10:00:00"}, 422, "split_outside"),
        ({"reason_code": "setup", "start": "2026-11-30T09:01:00"}, 404, "not_found"),
    ],
    ids=["scrap-reason", "unknown-reason", "split-outside", "no-stop-there"],
)
async def test_a_classification_that_cannot_hold_is_refused(
    app: Api, body: dict[str, str], status: int, code: str
) -> None:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    response = await app.client.post(
        f"/machines/{machine_id}/downtimes/classify", json={"start": "2026-11-30T09:00:00"} | body, headers=planner
    )
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


async def test_workers_classify_the_stops_of_their_own_machine_only(app: Api) -> None:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    worker_id, worker = await app.signed_in(Role.WORKER)
    url = f"/machines/{machine_id}/downtimes/classify"
    refused = await app.client.post(url, json={"start": iso(local(12)), "reason_code": "breakdown"}, headers=worker)
    assert (refused.status_code, refused.json()["code"]) == (403, "not_your_machine")
    order = await app.add(make_work_order, start=local(6), stages=[StageStatus.IN_PROGRESS], machine_id=machine_id)
    await assign(app, planner, order.stages[0].id, worker_id)
    allowed = await app.client.post(url, json={"start": iso(local(12)), "reason_code": "breakdown"}, headers=worker)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()[0]["classified_by_id"] == worker_id
    async with app.begin() as connection:  # the stage is done now: no more machine of theirs
        await connection.execute(
            update(WorkOrderStage).where(WorkOrderStage.id == order.stages[0].id).values(status=StageStatus.DONE)
        )
    late = await app.client.post(url, json={"start": iso(local(12)), "reason_code": "setup"}, headers=worker)
    assert late.status_code == 403
    assert (await app.add(_stage_ids, machine_id)) == [order.stages[0].id]


async def _stage_ids(session: Any, machine_id: int) -> list[int]:
    return list(await session.scalars(select(WorkOrderStage.id).where(WorkOrderStage.machine_id == machine_id)))


# --- OEE by shift and day ----------------------------------------------------------------------------------------


async def classified_monday(app: Api) -> tuple[int, Headers]:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    await with_calendar(app, planner)
    response = await app.client.post(
        f"/machines/{machine_id}/downtimes/classify",
        json={"start": iso(local(9)), "reason_code": "setup"},
        headers=planner,
    )
    assert response.status_code == 200, response.text
    return machine_id, planner


async def test_oee_by_shift_computed_by_hand(app: Api) -> None:
    machine_id, planner = await classified_monday(app)
    response = await app.client.get(
        "/oee",
        params={
            "machine_id": machine_id,
            "group_by": "shift",
            "from": "2026-11-30T06:00:00",
            "to": "2026-12-01T06:00:00",
        },
        headers=planner,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["calendar"] is True
    early, late, night = body["rows"]
    assert [row["label"] for row in body["rows"]] == ["2026-11-30 early", "2026-11-30 late", "2026-11-30 night"]
    # Early: 450 scheduled minutes; setup 20 (classified) and the alarm 10 (not yet) are availability losses.
    assert (early["scheduled_min"], early["planned_production_min"], early["run_min"]) == (450, 450, 420)
    assert early["losses_by_reason_min"] == {"setup": 20.0, "unclassified": 10.0}
    assert (early["unclassified_min"], early["minor_stops"], early["minor_stop_min"]) == (10.0, 1, 1.5)
    assert early["availability"] == pytest.approx(420 / 450)
    assert early["performance"] == pytest.approx(400 / 420)
    assert early["quality"] == pytest.approx(390 / 400)
    assert early["oee"] == pytest.approx(420 / 450 * 400 / 420 * 390 / 400)
    # Late and night: running all along; 400 parts in 450 minutes at 60 s each.
    for row, good in ((late, 400), (night, 380)):
        assert (row["run_min"], row["availability"]) == (450, 1.0)
        assert row["performance"] == pytest.approx(400 / 450)
        assert row["quality"] == pytest.approx(good / 400)
    assert body["pareto_min"] == [["setup", 20.0], ["unclassified", 10.0]]


async def test_shifts_add_up_to_their_production_day(app: Api) -> None:
    machine_id, planner = await classified_monday(app)
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-11-30T00:00:00",
        "to": "2026-12-01T12:00:00",
    }
    by_shift = (await app.client.get("/oee", params=window | {"group_by": "shift"}, headers=planner)).json()
    by_day = (await app.client.get("/oee", params=window | {"group_by": "day"}, headers=planner)).json()
    monday = [row for row in by_day["rows"] if row["label"] == "2026-11-30"]
    assert len(monday) == 1
    shifts = [row for row in by_shift["rows"] if row["label"].startswith("2026-11-30")]
    for name in ("scheduled_min", "planned_production_min", "run_min", "unclassified_min", "minor_stop_min"):
        assert monday[0][name] == pytest.approx(sum(row[name] for row in shifts)), name
    assert monday[0]["total_count"] == sum(row["total_count"] for row in shifts) == 1200
    assert monday[0]["scheduled_min"] == 3 * 450


async def test_oee_as_csv(app: Api) -> None:
    machine_id, planner = await classified_monday(app)
    response = await app.client.get(
        "/oee",
        params={"machine_id": machine_id, "group_by": "shift", "from": "2026-11-30T06:00:00",
                "to": "2026-12-01T06:00:00", "format": "csv"},
        headers=planner,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0].startswith("group,label,start,end,scheduled_min")
    assert "loss_setup_min" in lines[0]
    assert [line.split(",")[1] for line in lines[1:]][:3] == ["2026-11-30 early", "2026-11-30 late", "2026-11-30 night"]
    assert lines[-1].startswith("total,")


async def test_without_a_calendar_days_are_24_hours_and_shifts_are_refused(app: Api) -> None:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-11-30T00:00:00",
        "to": "2026-12-01T00:00:00",
    }
    refused = await app.client.get("/oee", params=window | {"group_by": "shift"}, headers=planner)
    assert (refused.status_code, refused.json()["code"]) == (409, "no_calendar")
    day = (await app.client.get("/oee", params=window | {"group_by": "day"}, headers=planner)).json()
    [monday] = day["rows"]
    assert monday["scheduled_min"] == 24 * 60
    assert monday["unknown_min"] == 6 * 60  # before the first state at 06:00 nothing is known
    assert any(note.startswith("no calendar") for note in monday["notes"])


async def test_a_breakdown_reported_during_a_stop_is_linked_to_it(app: Api) -> None:
    machine_id = await monday_press(app)
    planner = await app.actor(Role.PLANNER)
    order = await app.add(make_work_order, start=local(6), stages=[StageStatus.IN_PROGRESS], machine_id=machine_id)
    stage_id = order.stages[0].id
    async with app.session() as session:
        breakdown = Issue(stage_id=stage_id, type="machine_breakdown", description="hidrolik", created_at=local(12, 5))
        quality = Issue(stage_id=stage_id, type="quality", description="çapak", created_at=local(12, 6))
        elsewhere = Issue(stage_id=stage_id, type="machine_breakdown", description="sonra", created_at=local(13))
        session.add_all([breakdown, quality, elsewhere])
        await session.flush()
        linked = breakdown.id
    events = (
        await app.client.get(
            f"/machines/{machine_id}/downtimes",
            params={"from": "2026-11-30T06:00:00", "to": "2026-11-30T14:00:00"},
            headers=planner,
        )
    ).json()["events"]
    assert [row["issue_ids"] for row in events] == [[], [linked]]


async def test_a_worker_sees_stages_and_issues_in_the_downtime_list_only_when_they_are_theirs(app: Api) -> None:
    machine_id = await monday_press(app)
    order = await app.add(make_work_order, start=local(6), stages=[StageStatus.IN_PROGRESS], machine_id=machine_id)
    async with app.session() as session:
        issue = Issue(stage_id=order.stages[0].id, type="machine_breakdown", description="x", created_at=local(12, 5))
        started = StageEvent(stage_id=order.stages[0].id, kind=StageEventKind.START, at=local(6))
        session.add_all([issue, started])
    params = {"from": "2026-11-30T06:00:00", "to": "2026-11-30T14:00:00"}
    url = f"/machines/{machine_id}/downtimes"
    stranger = await app.actor(Role.WORKER)
    hidden = (await app.client.get(url, params=params, headers=stranger)).json()["events"]
    assert [(row["stage_id"], row["issue_ids"]) for row in hidden] == [(None, []), (None, [])]
    planner = await app.actor(Role.PLANNER)
    shown = (await app.client.get(url, params=params, headers=planner)).json()["events"]
    assert [row["stage_id"] for row in shown] == [order.stages[0].id, order.stages[0].id]
    assert shown[1]["issue_ids"] != []


async def test_oee_by_stage_and_work_order_is_the_same_calculation_over_their_run(app: Api) -> None:
    machine_id, planner = await classified_monday(app)
    # Lot L-A: Enjeksiyon 06:00-14:00 (done) then Çapak alma 14:00 on, still running at 22:00. Lot L-C: cancelled.
    first = await app.add(make_work_order, start=local(6), stages=[StageStatus.DONE, StageStatus.IN_PROGRESS],
                          stage_names=["Enjeksiyon", "Çapak alma"], machine_id=machine_id, lot_no="L-A")  # fmt: skip
    cancelled = await app.add(make_work_order, start=local(6), stages=[StageStatus.IN_PROGRESS],
                              machine_id=machine_id, lot_no="L-C", cancelled=True)  # fmt: skip
    injection, trimming = (stage.id for stage in first.stages)
    async with app.session() as session:
        session.add_all(
            [
                StageEvent(stage_id=injection, kind=StageEventKind.START, at=local(6)),
                StageEvent(stage_id=injection, kind=StageEventKind.DONE, at=local(14)),
                StageEvent(stage_id=trimming, kind=StageEventKind.START, at=local(14)),
                StageEvent(stage_id=cancelled.stages[0].id, kind=StageEventKind.START, at=local(6)),
            ]
        )
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-11-30T06:00:00",
        "to": "2026-11-30T22:00:00",
    }
    by_shift = (await app.client.get("/oee", params=window | {"group_by": "shift"}, headers=planner)).json()
    by_stage = (await app.client.get("/oee", params=window | {"group_by": "stage"}, headers=planner)).json()
    by_order = (await app.client.get("/oee", params=window | {"group_by": "work_order"}, headers=planner)).json()
    assert [row["label"] for row in by_stage["rows"]] == [
        f"L-A Enjeksiyon (stage {injection})",
        f"L-A Çapak alma (stage {trimming})",
    ]
    # The stages ran exactly the early and the late shift: the same figures, from the same function.
    figures = ("scheduled_min", "run_min", "unclassified_min", "total_count", "good_count", "availability", "oee")
    for stage_row, shift_row in zip(by_stage["rows"], by_shift["rows"][:2], strict=True):
        assert {name: stage_row[name] for name in figures} == {name: shift_row[name] for name in figures}
    [order] = by_order["rows"]
    assert (order["label"], order["start"], order["end"]) == (
        f"L-A (work order {first.id})",
        by_shift["rows"][0]["start"],
        by_shift["rows"][1]["end"],
    )
    assert order["total_count"] == 800
    assert order["scheduled_min"] == 2 * 450


async def test_a_work_orders_row_holds_only_its_stages_runs_and_workers_see_only_theirs(app: Api) -> None:
    machine_id, planner = await classified_monday(app)
    # Lot L-A runs 06:00-09:00 and 12:00-14:00 on the press; lot L-B runs between them, 09:00-12:00.
    first = await app.add(make_work_order, start=local(6), stages=[StageStatus.DONE, StageStatus.DONE],
                          machine_id=machine_id, lot_no="L-A")  # fmt: skip
    second = await app.add(make_work_order, start=local(9), stages=[StageStatus.DONE], machine_id=machine_id,
                           lot_no="L-B")  # fmt: skip
    runs = [(first.stages[0].id, 6, 9), (second.stages[0].id, 9, 12), (first.stages[1].id, 12, 14)]
    async with app.session() as session:
        for stage_id, begin, finish in runs:
            session.add(StageEvent(stage_id=stage_id, kind=StageEventKind.START, at=local(begin)))
            session.add(StageEvent(stage_id=stage_id, kind=StageEventKind.DONE, at=local(finish)))
    window: dict[str, str | int] = {
        "machine_id": machine_id,
        "from": "2026-11-30T06:00:00",
        "to": "2026-11-30T14:00:00",
    }
    by_order = (await app.client.get("/oee", params=window | {"group_by": "work_order"}, headers=planner)).json()
    rows = {row["label"]: row for row in by_order["rows"]}
    lot_a, lot_b = rows[f"L-A (work order {first.id})"], rows[f"L-B (work order {second.id})"]
    # L-A: 180 + 120 minutes (the 10:00 break is in L-B's time); its loss is the 10-minute alarm at 12:00.
    assert (lot_a["scheduled_min"], lot_a["run_min"], lot_a["unclassified_min"]) == (300, 290, 10)
    # L-B: 180 minutes less the break; the 20-minute setup at 09:00 is its loss. Together: the early shift.
    assert (lot_b["scheduled_min"], lot_b["run_min"], lot_b["losses_by_reason_min"]) == (150, 130, {"setup": 20.0})
    assert lot_a["scheduled_min"] + lot_b["scheduled_min"] == by_order["total"]["scheduled_min"] == 450
    # A worker sees the rows of the stages assigned to them only: no other lot's name.
    worker_id, worker = await app.signed_in(Role.WORKER)
    await assign(app, planner, second.stages[0].id, worker_id)
    seen = (await app.client.get("/oee", params=window | {"group_by": "stage"}, headers=worker)).json()
    assert [row["label"] for row in seen["rows"]] == [f"L-B S1 (stage {second.stages[0].id})"]
