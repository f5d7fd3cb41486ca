"""OEE over HTTP on SQLite and PostgreSQL: a stage's run, a machine's window, the stages of a machine, bad input.

The shift is the worked example of docs/metrics.md ("OEE"); every expected number there is computed by hand.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from core.contract import MachineState
from core.models import Issue, IssueStatus, Role, StageAssignment, StageStatus
from core.settings import OeeSettings
from tests.support.api import Api, running_api, total_of
from tests.support.factories import add_readings, add_states, make_machine, make_work_order
from tests.support.tracking import create_work_order

DAY = datetime(2026, 11, 26, tzinfo=UTC)
RUNNING, IDLE, SETUP, ALARM, OFF = (
    MachineState.RUNNING,
    MachineState.IDLE,
    MachineState.SETUP,
    MachineState.ALARM,
    MachineState.OFF,
)
# The shift of the worked example: 06:00-14:00, ideal cycle time 32.4 s, a cycle every 36 s while running.
SHIFT = [
    (6, 0, RUNNING),
    (8, 0, ALARM),
    (8, 30, RUNNING),
    (10, 0, SETUP),
    (10, 45, RUNNING),
    (12, 0, IDLE),
    (12, 15, RUNNING),
    (13, 30, OFF),
]
SAMPLE_EVERY_S = 36
CYCLE_S = 36
IDEAL_CYCLE_S = 32.4


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def running_seconds_until(moment: datetime) -> float:
    """Seconds spent running in the shift up to `moment`."""
    total = 0.0
    bounds = [at(h, m) for h, m, _ in SHIFT] + [at(14)]
    for (_, _, state), low, high in zip(SHIFT, bounds, bounds[1:], strict=False):
        if state is RUNNING and moment > low:
            total += (min(moment, high) - low).total_seconds()
    return total


def shift_readings() -> list[tuple[str, datetime, float]]:
    """The controller sampled every 36 s all shift (stops too): cycles done so far; every 20th cycle is scrap."""
    rows: list[tuple[str, datetime, float]] = []
    for k in range(8 * 3600 // SAMPLE_EVERY_S):
        moment = at(6) + timedelta(seconds=k * SAMPLE_EVERY_S)
        cycles = math.floor(running_seconds_until(moment) / CYCLE_S)
        rows += [
            ("cycle_count", moment, cycles),
            ("good_count", moment, cycles - cycles // 20),
            ("scrap_count", moment, cycles // 20),
        ]
    return rows


async def shift_machine(api: Api) -> int:
    """The worked example's machine, next to another machine whose rows must never leak in."""
    async with api.session() as session:
        machine = await make_machine(session, "press-1", ideal_cycle_time_s=IDEAL_CYCLE_S)
        await add_states(session, machine.id, [(at(h, m), state) for h, m, state in SHIFT])
        await add_readings(session, machine.id, shift_readings())
        other = await make_machine(session, "press-2", ideal_cycle_time_s=IDEAL_CYCLE_S)
        await add_states(session, other.id, [(at(7), OFF), (at(9), RUNNING)])
        await add_readings(session, other.id, [("cycle_count", at(6, 30), 1), ("cycle_count", at(9, 30), 5000)])
    return machine.id


SHIFT_OEE = {
    "window_s": 28800.0,
    "planned_production_s": 27000.0,
    "running_s": 21600.0,
    "downtime_s": {"alarm": 1800.0, "setup": 2700.0, "idle": 900.0, "unknown": 0.0},
    "off_s": 1800.0,
    "ideal_cycle_time_s": 32.4,
    "total_count": 600,
    "good_count": 570,
    "scrap_count": 30,
    "availability": 0.8,
    "performance": 0.9,
    "quality": 0.95,
    "oee": 0.684,
    "notes": [],
}


async def test_machine_oee_of_a_shift_with_stops_matches_the_worked_example(api: Api) -> None:
    machine_id = await shift_machine(api)
    worker = await api.actor(Role.WORKER)
    api.set_now(at(15))
    response = await api.client.get(
        f"/machines/{machine_id}/oee", params={"from": z(at(6)), "to": z(at(14))}, headers=worker
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "machine_id": machine_id,
        "stage_id": None,
        "from": "2026-11-26T06:00:00Z",
        "to": "2026-11-26T14:00:00Z",
        **SHIFT_OEE,
        "issues": [],
        "reported": None,  # a machine's window has no reported counts; a stage's has
    }


async def test_a_window_reaching_past_now_ends_at_now(api: Api) -> None:
    machine_id = await shift_machine(api)
    planner = await api.actor(Role.PLANNER)
    api.set_now(at(10))
    body = (
        await api.client.get(f"/machines/{machine_id}/oee", params={"from": z(at(6)), "to": z(at(14))}, headers=planner)
    ).json()
    # 06:00-10:00: running 2 h + 1.5 h, alarm 30 min. The sample at 10:00 is outside [from, to): the last one
    # counted is 09:59:24, after 12564 s of running = 349 whole cycles (17 of them scrap: every 20th).
    assert body["to"] == "2026-11-26T10:00:00Z"
    assert (body["running_s"], body["downtime_s"]["alarm"], body["planned_production_s"]) == (12600, 1800, 14400)
    assert (body["total_count"], body["good_count"], body["scrap_count"]) == (349, 332, 17)
    assert body["availability"] == 0.875
    assert body["performance"] == round(32.4 * 349 / 12600, 4)
    assert body["quality"] == round(332 / 349, 4)


async def add_work_order(
    api: Api,
    *,
    machine_id: int | None,
    status: StageStatus = StageStatus.PLANNED,
    start: datetime,
    cancelled: bool = False,
) -> int:
    """A work order with one two-hour stage from `start`; returns the stage id."""
    async with api.session() as session:
        work_order = await make_work_order(
            session,
            start=start,
            stages=[status],
            stage_hours=2,
            stage_names=["Enjeksiyon"],
            machine_id=machine_id,
            product_code="PX",
            qty=100,
            cancelled=cancelled,
        )
        return work_order.stages[0].id


async def test_stage_oee_covers_the_stage_run_and_lists_its_issues(api: Api) -> None:
    machine_id = await shift_machine(api)
    planner = await api.actor(Role.PLANNER)
    order = {
        "product_code": "PX-1",
        "lot_no": "L-7",
        "qty": 600,
        "planned_start": z(at(6)),
        "planned_end": z(at(14)),
        "stages": [
            {"stage_name": "Enjeksiyon", "planned_start": z(at(6)), "planned_end": z(at(14)), "machine_id": machine_id}
        ],
    }
    stage_id = (await create_work_order(api, planner, **order))["stages"][0]["id"]
    async with api.begin() as conn:
        await conn.execute(
            insert(Issue),
            [
                {
                    "stage_id": stage_id,
                    "type": "quality",
                    "description": "before the run",
                    "status": IssueStatus.OPEN,
                    "created_at": at(5),
                },
                {
                    "stage_id": stage_id,
                    "type": "machine_breakdown",
                    "description": "nozzle blocked",
                    "status": IssueStatus.ACK,
                    "created_at": at(8, 5),
                },
                {
                    "stage_id": stage_id,
                    "type": "other",
                    "description": "after the run",
                    "status": IssueStatus.OPEN,
                    "created_at": at(14, 10),
                },
            ],
        )
    api.set_now(at(6))
    assert (await api.client.post(f"/stages/{stage_id}/start", headers=planner)).status_code == 200

    api.set_now(at(10))
    running = (await api.client.get(f"/stages/{stage_id}/oee", headers=planner)).json()
    assert (running["stage_id"], running["from"], running["to"]) == (stage_id, z(at(6)), z(at(10)))
    assert running["total_count"] == 349

    api.set_now(at(14))
    done = await api.client.post(f"/stages/{stage_id}/done", json={"good_qty": 570, "scrap_qty": 30}, headers=planner)
    assert done.status_code == 200, done.text
    api.set_now(at(17))
    response = await api.client.get(f"/stages/{stage_id}/oee", headers=planner)
    assert response.status_code == 200, response.text
    body = response.json()
    issues = body.pop("issues")
    reported = body.pop("reported")
    assert body == {"machine_id": machine_id, "stage_id": stage_id, "from": z(at(6)), "to": z(at(14)), **SHIFT_OEE}
    assert reported == {
        "good_qty": 570,
        "scrap_qty": 30,
        "total": 600,
        "machine_total": 600,
        "machine_good": 570,
        "total_difference": 0,
        "good_difference": 0,
    }
    assert [{key: issue[key] for key in ("type", "status", "opened_at", "description")} for issue in issues] == [
        {"type": "machine_breakdown", "status": "ack", "opened_at": z(at(8, 5)), "description": "nozzle blocked"}
    ]
    assert isinstance(issues[0]["id"], int)


async def test_counter_reset_and_silence_over_http(api: Api) -> None:
    # Every minute 06:00-06:30 (100, 102, ... 160); silent until 06:50, when the PLC restarted at 0; then 2 a minute.
    rows = [("cycle_count", at(6, i), 100.0 + 2 * i) for i in range(31)]
    rows += [("cycle_count", at(6, 50 + j), 2.0 * j) for j in range(10)]
    async with api.session() as session:
        machine_id = (await make_machine(session, "press-9", ideal_cycle_time_s=30.0)).id
        await add_states(session, machine_id, [(at(6), RUNNING)])
        await add_readings(session, machine_id, rows)
    worker = await api.actor(Role.WORKER)
    api.set_now(at(12))
    body = (
        await api.client.get(f"/machines/{machine_id}/oee", params={"from": z(at(6)), "to": z(at(7))}, headers=worker)
    ).json()
    # Known 06:00-06:35 (the 06:30 reading vouches for 300 s) and 06:50-07:00: 2700 s; 900 s unknown.
    assert (body["running_s"], body["downtime_s"]["unknown"], body["planned_production_s"]) == (2700, 900, 2700)
    assert body["total_count"] == 60 + 18  # +60 before the restart, then from 0 to 18
    assert (body["good_count"], body["scrap_count"], body["quality"], body["oee"]) == (None, None, None, None)
    assert body["availability"] == 1.0
    assert body["performance"] == round(30 * 78 / 2700, 4)
    assert body["notes"] == [
        "900 s with no known state (before the first state change, or silent for more than 300 s): "
        "not planned production time",
        "cycle_count was reset 1 time(s) in the window; counted on from the value after each",
        "no good_count readings, and no cycle_count and scrap_count to derive it from: quality is null",
    ]


async def test_settings_choose_the_counter_tags_and_the_silence_rule(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session, "press-5")).id
        await add_states(session, machine_id, [(at(6), RUNNING), (at(6, 30), IDLE)])
        await add_readings(
            session,
            machine_id,
            [("shots", at(6), 10.0), ("shots", at(6, 59), 50.0), ("ok", at(6), 0.0), ("ok", at(6, 59), 36.0)],
        )
    settings = api.settings.model_copy(
        update={"oee": OeeSettings(oee_total_count_tag="shots", oee_good_count_tag="ok", oee_max_silence_s=0)}
    )
    async with running_api(api.database, settings) as custom:
        headers = await custom.actor(Role.WORKER)
        custom.set_now(at(12))
        response = await custom.client.get(
            f"/machines/{machine_id}/oee", params={"from": z(at(6)), "to": z(at(7))}, headers=headers
        )
        body = response.json()
    assert (body["total_count"], body["good_count"], body["scrap_count"]) == (40, 36, 4)
    assert (body["running_s"], body["downtime_s"]["idle"], body["downtime_s"]["unknown"]) == (1800, 1800, 0)
    assert (body["availability"], body["quality"], body["performance"]) == (0.5, 0.9, None)
    assert f"no ideal cycle time set for machine {machine_id}: performance is null" in body["notes"]


def assert_problem(response: Any, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    if field is not None:
        assert field in {error["field"] for error in body["errors"]}


MACHINE_ERRORS = [
    ("to missing", {"from": "2026-11-26T06:00:00Z"}, "validation_failed", "to"),
    ("not a time", {"from": "yesterday", "to": "2026-11-26T07:00:00Z"}, "validation_failed", "from"),
    ("to before from", {"from": "2026-11-26T07:00:00Z", "to": "2026-11-26T06:00:00Z"}, "invalid_window", "from"),
    ("empty window", {"from": "2026-11-26T07:00:00Z", "to": "2026-11-26T07:00:00Z"}, "invalid_window", "from"),
    ("32 days", {"from": "2026-10-25T06:00:00Z", "to": "2026-11-26T06:00:01Z"}, "range_too_large", "from"),
    ("future", {"from": "2026-11-27T06:00:00Z", "to": "2026-11-27T07:00:00Z"}, "window_in_future", "from"),
]


@pytest.mark.parametrize(("case", "params", "code", "field"), MACHINE_ERRORS, ids=[c[0] for c in MACHINE_ERRORS])
async def test_bad_machine_windows_are_422(api: Api, case: str, params: dict[str, str], code: str, field: str) -> None:
    machine_id = (await api.add(make_machine, "press-1")).id
    headers = await api.actor(Role.WORKER)
    api.set_now(at(12))
    response = await api.client.get(f"/machines/{machine_id}/oee", params=params, headers=headers)
    assert_problem(response, 422, code, field)


async def test_31_days_is_allowed_and_unknown_machines_are_404(api: Api) -> None:
    machine_id = (await api.add(make_machine, "press-1")).id
    headers = await api.actor(Role.WORKER)
    api.set_now(at(12))
    window = {"from": z(at(6) - timedelta(days=31)), "to": z(at(6))}
    assert (await api.client.get(f"/machines/{machine_id}/oee", params=window, headers=headers)).status_code == 200
    assert_problem(await api.client.get("/machines/999999/oee", params=window, headers=headers), 404, "not_found")
    assert_problem(await api.client.get("/machines/999999/stages", headers=headers), 404, "not_found")
    assert_problem(await api.client.get("/stages/999999/oee", headers=headers), 404, "not_found")


async def test_stage_oee_needs_a_machine_and_a_start(api: Api) -> None:
    machine_id = (await api.add(make_machine, "press-1")).id
    without_machine = await add_work_order(api, machine_id=None, status=StageStatus.IN_PROGRESS, start=at(6))
    not_started = await add_work_order(api, machine_id=machine_id, start=at(6))
    planner = await api.actor(Role.PLANNER)
    response = await api.client.get(f"/stages/{without_machine}/oee", headers=planner)
    assert_problem(response, 409, "stage_without_machine")
    assert "has no machine" in response.json()["detail"]
    response = await api.client.get(f"/stages/{not_started}/oee", headers=planner)
    assert_problem(response, 409, "stage_not_started")
    assert "has not started" in response.json()["detail"]
    worker = await api.actor(Role.WORKER)  # not on that work order: it does not exist for them
    assert_problem(await api.client.get(f"/stages/{not_started}/oee", headers=worker), 404, "not_found")


async def test_the_stages_of_a_machine_newest_first(api: Api) -> None:
    async with api.session() as session:
        machine_id = (await make_machine(session, "press-1")).id
        other = (await make_machine(session, "press-2")).id
    early = await add_work_order(api, machine_id=machine_id, status=StageStatus.DONE, start=at(6))
    running = await add_work_order(api, machine_id=machine_id, status=StageStatus.IN_PROGRESS, start=at(8))
    paused = await add_work_order(api, machine_id=machine_id, status=StageStatus.PAUSED, start=at(9))
    planned = await add_work_order(api, machine_id=machine_id, start=at(12))
    await add_work_order(api, machine_id=machine_id, start=at(13), cancelled=True)
    await add_work_order(api, machine_id=other, status=StageStatus.IN_PROGRESS, start=at(10))
    planner = await api.actor(Role.PLANNER)

    async def ids(headers: dict[str, str], **params: Any) -> tuple[list[int], int]:
        response = await api.client.get(f"/machines/{machine_id}/stages", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert all(item["stage"]["machine_id"] == machine_id for item in body)
        assert all(item["work_order"]["id"] == item["stage"]["work_order_id"] for item in body)
        return [item["stage"]["id"] for item in body], total_of(response)

    assert await ids(planner) == ([planned, paused, running, early], 4)
    assert await ids(planner, status=["in_progress", "paused"]) == ([paused, running], 2)
    assert await ids(planner, limit=2, offset=1) == ([paused, running], 4)
    worker_user = await api.create_user("op-1", Role.WORKER)
    async with api.begin() as conn:
        await conn.execute(insert(StageAssignment).values(stage_id=running, user_id=worker_user.id))
    assert await ids(await api.login("op-1")) == ([running], 1)
    bad = await api.client.get(f"/machines/{machine_id}/stages", params={"status": "busy"}, headers=planner)
    assert_problem(bad, 422, "validation_failed", "status.0")  # the first (only) `status` given


async def test_reported_counts_that_disagree_with_the_machine_show_the_difference(api: Api) -> None:
    machine_id = await shift_machine(api)  # counts 600 parts, 570 good, over 06:00-14:00
    planner = await api.actor(Role.PLANNER)
    stage = {"stage_name": "Enjeksiyon", "planned_start": z(at(6)), "planned_end": z(at(14)), "machine_id": machine_id}
    order = {"product_code": "PX-2", "lot_no": "L-8", "qty": 600, "planned_start": z(at(6)), "planned_end": z(at(14))}
    stage_id = (await create_work_order(api, planner, **order, stages=[stage]))["stages"][0]["id"]
    api.set_now(at(6))
    assert (await api.client.post(f"/stages/{stage_id}/start", headers=planner)).status_code == 200
    api.set_now(at(14))
    body = {"good_qty": 580, "scrap": [{"reason": "flash", "qty": 10}]}  # 590 reported, 10 short; 10 good too many
    assert (await api.client.post(f"/stages/{stage_id}/done", json=body, headers=planner)).status_code == 200
    oee = (await api.client.get(f"/stages/{stage_id}/oee", headers=planner)).json()
    assert oee["reported"] == {
        "good_qty": 580,
        "scrap_qty": 10,
        "total": 590,
        "machine_total": 600,
        "machine_good": 570,
        "total_difference": -10,
        "good_difference": 10,
    }
    assert oee["notes"] == [
        "reported 590 parts (good + scrap), the machine counted 600: difference -10",
        "reported 580 good parts, the machine counted 570: difference +10",
    ]
    # The machine's own figures are what OEE is computed from: the reported counts do not change them.
    assert (oee["total_count"], oee["good_count"], oee["quality"]) == (600, 570, 0.95)
