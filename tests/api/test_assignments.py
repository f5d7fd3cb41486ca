"""Assigning workers to stages, and a worker's own list of stages ("my stages")."""

from __future__ import annotations

from core.models import Role
from tests.support.api import Api, total_of
from tests.support.tracking import act, assign, create_work_order, hours, problem_fields


async def test_workers_share_a_stage_until_one_is_taken_off(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-l")
    first_id, first = await api.signed_in(Role.WORKER, "emine")
    second_id, second = await api.signed_in(Role.WORKER, "osman")
    gone = await api.create_user("retired", Role.WORKER, active=False)
    work_order = await create_work_order(api, planner)
    stage_id = work_order["stages"][0]["id"]
    url = f"/stages/{stage_id}/assignments"

    api.set_now(hours(-2))
    await assign(api, planner, stage_id, first_id)
    api.set_now(hours(-1))
    shared = await assign(api, planner, stage_id, second_id)
    assert [(a["user_id"], a["username"]) for a in shared["assignees"]] == [(first_id, "emine"), (second_id, "osman")]
    twice = await api.client.post(url, json={"user_id": first_id}, headers=planner)
    assert (twice.status_code, twice.json()["code"]) == (409, "already_assigned")
    for user_id in (gone.id, 999_999):
        assert problem_fields(await api.client.post(url, json={"user_id": user_id}, headers=planner)) == ["user_id"]

    removed = await api.client.delete(f"{url}/{second_id}", headers=planner)
    assert (removed.status_code, removed.content) == (204, b"")
    assert (await api.client.get(f"/workorders/{work_order['id']}", headers=second)).status_code == 404
    start = await api.client.post(f"/stages/{stage_id}/start", headers=second)
    assert (start.status_code, start.json()["code"]) == (404, "not_found")  # as the work order: out of sight
    assert (await api.client.delete(f"{url}/{second_id}", headers=planner)).status_code == 404
    stage = (await api.client.get(f"/stages/{stage_id}", headers=first)).json()
    assert [a["user_id"] for a in stage["assignees"]] == [first_id]
    assert (await act(api, first, stage_id, "start", hours(0.1)))["status"] == "in_progress"


async def test_my_stages_lists_soonest_first_with_their_work_orders(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-m")
    worker_id, worker = await api.signed_in(Role.WORKER, "zeynep")
    other_id, _ = await api.signed_in(Role.WORKER, "kemal")
    today = await create_work_order(api, planner, product_code="P-TODAY")
    early = await create_work_order(
        api, planner, product_code="P-EARLY", planned_start=hours(-2), planned_end=hours(-1)
    )
    late = await create_work_order(api, planner, product_code="P-LATE", planned_start=hours(2), planned_end=hours(6))
    montaj, early_enj, late_enj = today["stages"][1]["id"], early["stages"][0]["id"], late["stages"][0]["id"]
    for stage_id in (late_enj, montaj, early_enj):
        await assign(api, planner, stage_id, worker_id)
    await assign(api, planner, today["stages"][0]["id"], other_id)
    await act(api, worker, late_enj, "start", hours(2.1))

    response = await api.client.get("/me/stages", headers=worker)
    mine = response.json()
    assert total_of(response) == 3
    assert [(item["stage"]["id"], item["work_order"]["product_code"]) for item in mine] == [
        (early_enj, "P-EARLY"),
        (montaj, "P-TODAY"),
        (late_enj, "P-LATE"),
    ]
    assert mine[1]["work_order"]["id"] == today["id"]
    assert mine[1]["stage"]["stage_name"] == "Montaj"
    running = await api.client.get("/me/stages", params={"status": "in_progress"}, headers=worker)
    assert ([item["stage"]["id"] for item in running.json()], total_of(running)) == ([late_enj], 1)
    planned = await api.client.get("/me/stages", params={"status": "planned", "limit": 1, "offset": 1}, headers=worker)
    assert ([item["stage"]["id"] for item in planned.json()], total_of(planned)) == ([montaj], 2)
    assert total_of(await api.client.get("/me/stages", params={"status": "done"}, headers=worker)) == 0
