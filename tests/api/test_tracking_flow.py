"""A shift as users live it: plan, assign, start, pause, resume, finish; metrics checked against hand arithmetic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from core.models import Role, StageEvent, StageEventKind
from tests.support.api import Api, make_settings, running_api
from tests.support.factories import make_machine
from tests.support.tracking import assign, create_work_order

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def plan(start: datetime = T0, hours: float = 4, **extra: Any) -> dict[str, Any]:
    return {
        "product_code": "KAPAK-42",
        "lot_no": "LOT-2026-11-26",
        "qty": 500,
        "planned_start": iso(start),
        "planned_end": iso(start + timedelta(hours=hours)),
        **extra,
    }


async def test_a_whole_shift_with_hand_computed_metrics(api: Api) -> None:
    planner = await api.actor(Role.PLANNER)
    worker_id, worker = await api.signed_in(Role.WORKER, "ahmet")

    api.set_now(T0 - timedelta(hours=1))
    created = await api.client.post("/workorders/", json=plan(notes="Mavi kapak"), headers=planner)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "planned"
    enjeksiyon, montaj = order["stages"]
    # Default stages: Enjeksiyon for 30 minutes from the start, then Montaj to the planned end.
    assert (enjeksiyon["stage_name"], enjeksiyon["planned_start"], enjeksiyon["planned_end"]) == (
        "Enjeksiyon",
        "2026-11-26T08:00:00Z",
        "2026-11-26T08:30:00Z",
    )
    assert (montaj["stage_name"], montaj["planned_start"], montaj["planned_end"]) == (
        "Montaj",
        "2026-11-26T08:30:00Z",
        "2026-11-26T12:00:00Z",
    )
    assert enjeksiyon["allowed_actions"] == ["start"]

    for stage in (enjeksiyon, montaj):
        assigned = await assign(api, planner, stage["id"], worker_id)
        assert [a["username"] for a in assigned["assignees"]] == ["ahmet"]

    mine = await api.client.get("/me/stages", headers=worker)
    assert [item["stage"]["stage_name"] for item in mine.json()] == ["Enjeksiyon", "Montaj"]
    assert mine.json()[0]["work_order"]["product_code"] == "KAPAK-42"

    async def act(stage_id: int, action: str, at: datetime, body: dict[str, Any] | None = None) -> dict[str, Any]:
        api.set_now(at)
        response = await api.client.post(f"/stages/{stage_id}/{action}", json=body, headers=worker)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    started = await act(enjeksiyon["id"], "start", T0 + timedelta(minutes=2))
    assert started["status"] == "in_progress"
    assert started["actual_start"] == "2026-11-26T08:02:00Z"
    assert started["allowed_actions"] == ["pause", "done"]
    paused = await act(enjeksiyon["id"], "pause", T0 + timedelta(minutes=12), {"reason": "Kalıp temizliği"})
    assert paused["allowed_actions"] == ["resume", "done"]
    await act(enjeksiyon["id"], "resume", T0 + timedelta(minutes=20))

    # While running at 08:30: worked 10 + 10 = 20 min, 10 min of the 30 planned remain -> projected end 08:40.
    api.set_now(T0 + timedelta(minutes=30))
    running = (await api.client.get(f"/stages/{enjeksiyon['id']}/metrics", headers=worker)).json()
    assert running["actual_duration_min"] == 20.0
    assert running["paused_min"] == 8.0
    assert running["projected"] is True
    assert running["delay_min"] == 10.0
    assert running["on_time"] is False
    assert running["efficiency_percent"] is None
    in_progress = (await api.client.get(f"/workorders/{order['id']}", headers=worker)).json()
    assert in_progress["status"] == "in_progress"

    done = await act(enjeksiyon["id"], "done", T0 + timedelta(minutes=42), {"good_qty": 495, "scrap_qty": 5})
    assert (done["status"], done["good_qty"], done["scrap_qty"]) == ("done", 495, 5)
    assert done["actual_end"] == "2026-11-26T08:42:00Z"
    assert done["allowed_actions"] == []

    await act(montaj["id"], "start", T0 + timedelta(minutes=45))
    await act(montaj["id"], "done", T0 + timedelta(hours=3, minutes=45), {"good_qty": 490, "scrap_qty": 5})

    api.set_now(T0 + timedelta(hours=5))
    metrics = (await api.client.get(f"/workorders/{order['id']}/metrics", headers=planner)).json()
    first, second = metrics["stages"]
    # Enjeksiyon: planned 30; worked 08:02-08:12 and 08:20-08:42 = 10 + 22 = 32; paused 8; ended 08:42 vs 08:30.
    assert first == {
        "stage_id": enjeksiyon["id"],
        "stage_name": "Enjeksiyon",
        "status": "done",
        "planned_duration_min": 30.0,
        "actual_duration_min": 32.0,
        "paused_min": 8.0,
        "delay_min": 12.0,
        "efficiency_percent": 93.75,  # 30 / 32 * 100
        "on_time": False,
        "projected": False,
        "end": "2026-11-26T08:42:00Z",
        # The plan's names for the same minutes.
        "planned_duration": 30.0,
        "actual_duration": 32.0,
        "delay_minutes": 12.0,
    }
    # Montaj: planned 210 (08:30-12:00); worked 08:45-11:45 = 180; ended 30 min early.
    assert second["planned_duration_min"] == 210.0
    assert second["actual_duration_min"] == 180.0
    assert second["delay_min"] == -15.0
    assert second["efficiency_percent"] == 116.67  # 210 / 180 * 100
    assert second["on_time"] is True
    # Work order: planned 240; worked 32 + 180 = 212; ended 11:45, 15 min before 12:00; efficiency 240/212.
    assert metrics["status"] == "done"
    assert metrics["planned_duration_min"] == 240.0
    assert metrics["actual_duration_min"] == 212.0
    assert metrics["paused_min"] == 8.0
    assert metrics["delay_min"] == -15.0
    assert metrics["efficiency_percent"] == 113.21  # (30 + 210) / (32 + 180) * 100
    assert metrics["on_time"] is True
    assert metrics["on_time_stage_percent"] == 50.0
    assert (metrics["total_good_qty"], metrics["total_scrap_qty"]) == (985, 10)

    events = (await api.client.get(f"/stages/{enjeksiyon['id']}/events", headers=worker)).json()
    assert [(e["kind"], e["at"], e["user_id"], e["reason"]) for e in events] == [
        ("start", "2026-11-26T08:02:00Z", worker_id, None),
        ("pause", "2026-11-26T08:12:00Z", worker_id, "Kalıp temizliği"),
        ("resume", "2026-11-26T08:20:00Z", worker_id, None),
        ("done", "2026-11-26T08:42:00Z", worker_id, None),
    ]
    final = (await api.client.get(f"/workorders/{order['id']}", headers=worker)).json()
    assert final["status"] == "done"


async def test_workers_act_only_on_their_stages_and_see_only_their_work_orders(api: Api) -> None:
    planner = await api.actor(Role.PLANNER)
    worker_id, worker = await api.signed_in(Role.WORKER, "ayse")
    mine = await create_work_order(api, planner, **plan())
    other = await create_work_order(api, planner, **plan(lot_no="OTHER"))
    await assign(api, planner, mine["stages"][0]["id"], worker_id)

    unassigned_stage = mine["stages"][1]["id"]
    await api.client.post(f"/stages/{mine['stages'][0]['id']}/start", headers=worker)
    refused = await api.client.post(f"/stages/{unassigned_stage}/start", headers=worker)
    assert refused.status_code == 404  # not theirs: as if it did not exist
    assert refused.json()["code"] == "not_found"

    assert (await api.client.get(f"/workorders/{other['id']}", headers=worker)).status_code == 404
    assert (await api.client.get(f"/workorders/{other['id']}/stages", headers=worker)).status_code == 404
    assert (await api.client.get(f"/workorders/{other['id']}/metrics", headers=worker)).status_code == 404
    assert (await api.client.get(f"/stages/{other['stages'][0]['id']}", headers=worker)).status_code == 404
    listed = (await api.client.get("/workorders/", headers=worker)).json()
    assert [item["id"] for item in listed] == [mine["id"]]
    assert (await api.client.get(f"/workorders/{mine['id']}", headers=worker)).status_code == 200


@pytest.mark.parametrize(
    ("setup", "action", "body"),
    [
        ([], "done", {"good_qty": 1, "scrap_qty": 0}),
        ([], "pause", {"reason": "x"}),
        ([], "resume", None),
        (["start"], "start", None),
        (["start"], "resume", None),
        (["start", "pause"], "pause", {"reason": "again"}),
        (["start", "done"], "start", None),
        (["start", "done"], "pause", {"reason": "late"}),
    ],
)
async def test_invalid_transitions_are_409_naming_state_and_allowed_actions(
    api: Api, setup: list[str], action: str, body: dict[str, Any] | None
) -> None:
    admin = await api.actor(Role.ADMIN)
    stage_id = (await create_work_order(api, admin, **plan()))["stages"][0]["id"]
    bodies = {"pause": {"reason": "break"}, "done": {"good_qty": 1, "scrap_qty": 0}}
    for step in setup:
        assert (await api.client.post(f"/stages/{stage_id}/{step}", json=bodies.get(step), headers=admin)).is_success
    before = (await api.client.get(f"/stages/{stage_id}", headers=admin)).json()
    response = await api.client.post(f"/stages/{stage_id}/{action}", json=body, headers=admin)
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "invalid_transition"
    assert problem["current_status"] == before["status"]
    assert problem["allowed_actions"] == before["allowed_actions"]
    assert before["status"] in problem["detail"]
    after = (await api.client.get(f"/stages/{stage_id}", headers=admin)).json()
    assert after["status"] == before["status"]


async def test_a_worker_cannot_start_a_stage_before_the_previous_one(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    worker_id, worker = await api.signed_in(Role.WORKER)
    order = await create_work_order(api, admin, **plan())
    montaj = order["stages"][1]["id"]
    await assign(api, admin, montaj, worker_id)
    refused = await api.client.post(f"/stages/{montaj}/start", headers=worker)
    assert refused.status_code == 409
    assert refused.json()["code"] == "previous_stage_not_started"
    await api.client.post(f"/stages/{order['stages'][0]['id']}/start", headers=admin)
    assert (await api.client.post(f"/stages/{montaj}/start", headers=worker)).status_code == 200


@pytest.mark.parametrize("role", [Role.PLANNER, Role.ADMIN])
async def test_planners_and_admins_may_start_any_stage_and_the_log_says_so(api: Api, role: Role) -> None:
    actor = await api.actor(role)
    order = await create_work_order(api, actor, **plan())
    enjeksiyon, montaj = (stage["id"] for stage in order["stages"])
    started = await api.client.post(f"/stages/{montaj}/start", headers=actor)
    assert started.status_code == 200, started.text
    [event] = (await api.client.get(f"/stages/{montaj}/events", headers=actor)).json()
    assert event["kind"] == "start"
    assert event["reason"] == f"started before 'Enjeksiyon' (#{enjeksiyon}) by a {role.value}"


async def test_the_previous_stage_rule_can_be_turned_off(api: Api) -> None:
    settings = make_settings(api.database.url)
    settings.tracking.require_previous_stage_started = False
    async with running_api(api.database, settings) as relaxed:
        admin = await relaxed.actor(Role.ADMIN)
        order = await create_work_order(relaxed, admin, **plan())
        response = await relaxed.client.post(f"/stages/{order['stages'][1]['id']}/start", headers=admin)
        assert response.status_code == 200


async def test_custom_stages_are_kept_in_order(api: Api) -> None:
    planner = await api.actor(Role.PLANNER)
    press = await api.add(make_machine, "press-7", name="Press 7")
    stages = [
        {"stage_name": "Kalıp hazırlık", "planned_start": iso(T0), "planned_end": iso(T0 + timedelta(minutes=20))},
        {
            "stage_name": "Enjeksiyon",
            "planned_start": iso(T0 + timedelta(minutes=20)),
            "planned_end": iso(T0 + timedelta(hours=2)),
            "machine_id": press.id,
        },
        {
            "stage_name": "Paketleme",
            "planned_start": iso(T0 + timedelta(hours=3)),
            "planned_end": iso(T0 + timedelta(hours=4)),
        },
    ]
    response = await api.client.post("/workorders/", json=plan(stages=stages), headers=planner)
    assert response.status_code == 201, response.text
    created = response.json()["stages"]
    assert [(s["position"], s["stage_name"], s["machine_id"]) for s in created] == [
        (1, "Kalıp hazırlık", None),
        (2, "Enjeksiyon", press.id),
        (3, "Paketleme", None),
    ]


@pytest.mark.parametrize(
    ("stages", "field"),
    [
        ([(0, 60), (30, 90)], "stages.1.planned_start"),  # overlap
        ([(0, 60), (60, 300)], "stages.1.planned_end"),  # past the work order's end (240 min)
        ([(-10, 60)], "stages.0.planned_start"),  # before its start
        ([(60, 30)], "stages.0.planned_end"),  # ends before it starts
    ],
)
async def test_bad_custom_stages_are_422_with_the_field(api: Api, stages: list[tuple[int, int]], field: str) -> None:
    planner = await api.actor(Role.PLANNER)
    payload = [
        {
            "stage_name": f"S{i}",
            "planned_start": iso(T0 + timedelta(minutes=a)),
            "planned_end": iso(T0 + timedelta(minutes=b)),
        }
        for i, (a, b) in enumerate(stages)
    ]
    response = await api.client.post("/workorders/", json=plan(stages=payload), headers=planner)
    assert response.status_code == 422
    assert field in {error["field"] for error in response.json()["errors"]}


async def test_a_work_order_too_short_for_the_default_stages_is_422(api: Api) -> None:
    planner = await api.actor(Role.PLANNER)
    response = await api.client.post("/workorders/", json=plan(hours=0.5), headers=planner)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "window_too_short"
    assert "Enjeksiyon 30 min" in problem["detail"]
    assert problem["errors"][0]["field"] == "planned_end"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"qty": 0}, "qty"),
        ({"qty": -5}, "qty"),
        ({"planned_start": "2026-11-26T10:00:00Z", "planned_end": "2026-11-26T09:00:00Z"}, "body"),
        ({"planned_start": "2026-11-26T25:00:00"}, "planned_start"),
        ({"planned_end": "tomorrow"}, "planned_end"),
        ({"product_code": ""}, "product_code"),
        ({"stages": []}, "stages"),
    ],
)
async def test_bad_work_orders_are_422_with_field_detail(api: Api, overrides: dict[str, Any], field: str) -> None:
    planner = await api.actor(Role.PLANNER)
    response = await api.client.post("/workorders/", json=plan(**overrides), headers=planner)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert field in {error["field"] for error in errors}
    if "planned" in field:  # (a time without an offset is valid: plant time, tests/api/test_plant_time.py)
        assert "datetime" in next(e["message"] for e in errors if e["field"] == field)


async def test_unknown_issue_type_is_422(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    stage_id = (await create_work_order(api, admin, **plan()))["stages"][0]["id"]
    response = await api.client.post(
        f"/stages/{stage_id}/issue", json={"type": "aliens", "description": "strange lights"}, headers=admin
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "type"
    assert "machine_breakdown" in response.json()["errors"][0]["message"]


@pytest.mark.postgres
async def test_concurrent_starts_give_exactly_one_start(postgres_api: Api) -> None:
    api = postgres_api
    admin = await api.actor(Role.ADMIN)
    stage_ids = []
    for index in range(8):
        order = await create_work_order(api, admin, **plan(lot_no=f"RACE-{index}"))
        stage_ids.append(order["stages"][0]["id"])

    async def start(stage_id: int) -> int:
        return (await api.client.post(f"/stages/{stage_id}/start", headers=admin)).status_code

    for stage_id in stage_ids:
        statuses = await asyncio.gather(*(start(stage_id) for _ in range(4)))
        assert sorted(statuses) == [200, 409, 409, 409]
    async with api.session() as session:
        starts = await session.execute(
            select(StageEvent.stage_id, func.count())
            .where(StageEvent.kind == StageEventKind.START)
            .group_by(StageEvent.stage_id)
        )
        assert dict(starts.all()) == dict.fromkeys(stage_ids, 1)


async def test_edge_rules_a_user_would_hit(api: Api) -> None:
    planner = await api.actor(Role.PLANNER)
    order = await create_work_order(api, planner, **plan())
    stage_id = order["stages"][0]["id"]
    # Only machine_id may be cleared with an explicit null; nulls elsewhere are refused, not ignored.
    nulls = await api.client.patch(
        f"/stages/{stage_id}", json={"stage_name": None, "planned_end": None}, headers=planner
    )
    assert nulls.status_code == 422
    assert {error["field"] for error in nulls.json()["errors"]} == {"stage_name", "planned_end"}
    # A stage pushed past the work order's end is reported on the field that is wrong.
    late = await api.client.patch(
        f"/stages/{stage_id}", json={"planned_end": iso(T0 + timedelta(hours=9))}, headers=planner
    )
    assert late.status_code == 422
    assert late.json()["errors"][0]["field"] == "planned_end"
    # A backwards list window is a mistake, not an empty result.
    backwards = await api.client.get(
        "/workorders/", params={"planned_from": iso(T0), "planned_to": iso(T0 - timedelta(days=1))}, headers=planner
    )
    assert backwards.status_code == 422
    # A cancelled work order takes no new issue reports.
    await api.client.post(f"/workorders/{order['id']}/cancel", json={"reason": "customer"}, headers=planner)
    report = await api.client.post(
        f"/stages/{stage_id}/issue", json={"type": "quality", "description": "flash"}, headers=planner
    )
    assert report.status_code == 409
    assert report.json()["code"] == "work_order_cancelled"


@pytest.mark.parametrize("body", [None, {}, {"good_qty": 7}])
async def test_done_without_quantities_is_accepted_as_not_reported(api: Api, body: dict[str, Any] | None) -> None:
    # The original app's clients finish a stage with an empty POST.
    admin = await api.actor(Role.ADMIN)
    stage_id = (await create_work_order(api, admin, **plan()))["stages"][0]["id"]
    assert (await api.client.post(f"/stages/{stage_id}/start", headers=admin)).status_code == 200
    response = await api.client.post(f"/stages/{stage_id}/done", json=body, headers=admin)
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["good_qty"], done["scrap_qty"]) == ("done", (body or {}).get("good_qty"), None)
    negative = await api.client.post(f"/stages/{stage_id}/done", json={"good_qty": -1}, headers=admin)
    assert negative.status_code == 422  # what is reported is still checked
