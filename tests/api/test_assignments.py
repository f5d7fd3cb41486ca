"""Assigning workers to stages, and a worker's own list of stages ("my stages")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession

from core.models import Role
from tests.support.api import Api, total_of
from tests.support.tracking import act, assign, create_work_order, hours, problem_fields, report_issue


@contextmanager
def statements() -> Iterator[list[str]]:
    """The statements the ORM sends while the block runs (relationship loads included)."""
    seen: list[str] = []

    def sent(state: ORMExecuteState) -> None:
        seen.append(str(state.statement))

    event.listen(OrmSession, "do_orm_execute", sent)
    try:
        yield seen
    finally:
        event.remove(OrmSession, "do_orm_execute", sent)


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
    past_the_end = await api.client.get("/me/stages", params={"offset": 10}, headers=worker)
    assert (past_the_end.json(), total_of(past_the_end)) == ([], 3)


async def test_my_stages_come_in_four_statements_however_many_there_are(api: Api) -> None:
    """What every tablet asks at a shift change: the page with its work orders, total and open issues in one
    statement, then events, assignees and scrap lines (the user is remembered from the first request)."""
    _, planner = await api.signed_in(Role.PLANNER)
    worker_id, worker = await api.signed_in(Role.WORKER)
    orders = [await create_work_order(api, planner, product_code=f"P-{n}") for n in range(3)]
    stage_ids = [order["stages"][0]["id"] for order in orders]
    for stage_id in stage_ids:
        await assign(api, planner, stage_id, worker_id)
    await act(api, worker, stage_ids[1], "start", hours(0.1))
    await report_issue(api, worker, stage_ids[1])
    assert (await api.client.get("/me/stages", headers=worker)).status_code == 200
    with statements() as seen:
        response = await api.client.get("/me/stages", headers=worker)
    assert len(seen) == 4, seen
    mine = {item["stage"]["id"]: item for item in response.json()}
    assert set(mine) == set(stage_ids)
    assert total_of(response) == 3
    assert [mine[stage_id]["stage"]["open_issues"] for stage_id in stage_ids] == [0, 1, 0]
    assert [mine[stage_id]["work_order"]["product_code"] for stage_id in stage_ids] == ["P-0", "P-1", "P-2"]
    assert [mine[stage_id]["stage"]["actual_start"] is not None for stage_id in stage_ids] == [False, True, False]
    assert [[a["user_id"] for a in mine[stage_id]["stage"]["assignees"]] for stage_id in stage_ids] == [[worker_id]] * 3
