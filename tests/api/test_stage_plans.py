"""Re-planning a stage: its window and name while it is planned, only its machine once it has started."""

from __future__ import annotations

from typing import Any

from httpx import Response

from core.models import Role
from tests.support.api import Api
from tests.support.factories import make_machine
from tests.support.tracking import T0, act, create_work_order, hours, jsonable, problem_fields, stage_plan, when


async def test_planned_stage_is_replanned_inside_its_work_order(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-n")
    stages = [stage_plan("Enjeksiyon", T0, hours(2)), stage_plan("Montaj", hours(3), hours(6))]
    work_order = await create_work_order(api, planner, planned_end=hours(8), stages=stages)
    first, second = (stage["id"] for stage in work_order["stages"])

    async def patch(stage_id: int, **changes: Any) -> Response:
        return await api.client.patch(f"/stages/{stage_id}", json=jsonable(changes), headers=planner)

    moved = await patch(first, stage_name="Kalıp", planned_start=hours(0.5), planned_end=hours(2.5))
    assert moved.status_code == 200, moved.text
    assert (moved.json()["stage_name"], when(moved.json()["planned_start"])) == ("Kalıp", hours(0.5))
    assert when(moved.json()["planned_end"]) == hours(2.5)
    assert problem_fields(await patch(first, planned_end=hours(3.5))) == ["planned_end"]  # runs into Montaj
    assert problem_fields(await patch(second, planned_start=hours(2))) == ["planned_start"]  # Kalıp ends 2.5
    assert (await patch(second, planned_end=hours(9))).status_code == 422  # past the work order's end
    assert (await patch(first, planned_start=hours(-1))).status_code == 422  # before its start
    assert (await patch(first, planned_start=hours(2.5))).status_code == 422  # empty stage
    assert (await patch(second, planned_start=hours(2.5), planned_end=hours(8))).status_code == 200  # touching is fine
    after = (await api.client.get(f"/workorders/{work_order['id']}/stages", headers=planner)).json()
    windows = [(s["stage_name"], when(s["planned_start"]), when(s["planned_end"])) for s in after]
    assert windows == [("Kalıp", hours(0.5), hours(2.5)), ("Montaj", hours(2.5), hours(8))]


async def test_started_stage_keeps_its_plan_but_takes_a_machine(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-o")
    work_order = await create_work_order(api, planner)
    stage_id = work_order["stages"][0]["id"]
    await act(api, planner, stage_id, "start", hours(0.1))
    url = f"/stages/{stage_id}"
    press = (await api.add(make_machine, "press-7")).id

    for change in ({"planned_end": hours(0.75).isoformat()}, {"stage_name": "Baskı"}):
        locked = await api.client.patch(url, json=change, headers=planner)
        assert (locked.status_code, locked.json()["code"]) == (409, "plan_locked")
    assert problem_fields(await api.client.patch(url, json={"machine_id": press + 1}, headers=planner)) == [
        "machine_id"
    ]
    machine = await api.client.patch(url, json={"machine_id": press}, headers=planner)
    assert (machine.status_code, machine.json()["machine_id"], machine.json()["status"]) == (200, press, "in_progress")
    assert (await api.client.get(url, headers=planner)).json()["machine_id"] == press
    cleared = await api.client.patch(url, json={"machine_id": None}, headers=planner)
    assert (cleared.status_code, cleared.json()["machine_id"]) == (200, None)
    stage = (await api.client.get(url, headers=planner)).json()
    assert (stage["stage_name"], when(stage["planned_end"]), stage["machine_id"]) == ("Enjeksiyon", hours(0.5), None)
