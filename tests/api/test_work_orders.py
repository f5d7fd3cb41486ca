"""Work orders as planners and workers see them: lists (filters, sorting, pages), what a worker may see, plan
changes, and cancelling."""

from __future__ import annotations

from typing import Any

from core.models import Role
from tests.support.api import Api, total_of
from tests.support.tracking import (
    T0,
    act,
    assign,
    create_work_order,
    drive,
    hours,
    jsonable,
    listed,
    problem_fields,
    when,
)


async def test_list_filters_by_status_derived_from_stages(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-e")
    planned, running, half, paused, done, cancelled = [
        await create_work_order(api, planner, lot_no=f"L-{index}") for index in range(6)
    ]
    await act(api, planner, running["stages"][0]["id"], "start", hours(0.1))
    await act(api, planner, half["stages"][0]["id"], "start", hours(0.1))
    await act(api, planner, half["stages"][0]["id"], "done", hours(0.4))
    await act(api, planner, paused["stages"][0]["id"], "start", hours(0.1))
    await act(api, planner, paused["stages"][0]["id"], "pause", hours(0.2))
    for stage in done["stages"]:
        await act(api, planner, stage["id"], "start", hours(0.5))
        await act(api, planner, stage["id"], "done", hours(1))
    assert (await api.client.post(f"/workorders/{cancelled['id']}/cancel", headers=planner)).status_code == 200

    expected = {
        "planned": [planned["id"]],  # the cancelled one has only planned stages too, but is cancelled
        "in_progress": [running["id"], half["id"], paused["id"]],
        "done": [done["id"]],
        "cancelled": [cancelled["id"]],
    }
    for status, ids in expected.items():
        assert await listed(api, planner, "/workorders", status=status, sort="id") == (ids, len(ids))
        for work_order_id in ids:
            body = (await api.client.get(f"/workorders/{work_order_id}", headers=planner)).json()
            assert body["status"] == status
    assert problem_fields(await api.client.get("/workorders", params={"status": "paused"}, headers=planner)) == [
        "status"
    ]


async def test_list_filters_by_codes_and_window_sorts_and_pages(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-f")

    async def order(product: str, lot: str, start: float, end: float) -> int:
        made = await create_work_order(
            api, planner, product_code=product, lot_no=lot, planned_start=hours(start), planned_end=hours(end)
        )
        return int(made["id"])

    w1 = await order("P-1", "L-A", 0, 4)  # 08:00-12:00
    w2 = await order("P-2", "L-A", 4, 8)
    w3 = await order("P-1", "L-B", -2, -1)
    w4 = await order("P-3", "L-C", 8, 12)

    def ids(*found: int) -> tuple[list[int], int]:
        return list(found), len(found)

    url = "/workorders"
    assert await listed(api, planner, url, product_code="P-1") == ids(w3, w1)
    assert await listed(api, planner, url, lot_no="L-A") == ids(w1, w2)
    assert await listed(api, planner, url, product_code="P-1", lot_no="L-A") == ids(w1)
    assert await listed(api, planner, url, product_code="P-9") == ids()
    # Overlap: ends after planned_from and starts before planned_to; touching at an edge is not overlapping.
    assert await listed(api, planner, url, planned_from=hours(4), planned_to=hours(8)) == ids(w2)
    assert await listed(api, planner, url, planned_from=hours(3)) == ids(w1, w2, w4)
    assert await listed(api, planner, url, planned_to=hours(0.5)) == ids(w3, w1)
    assert await listed(api, planner, url, planned_from=hours(-1.5), planned_to=hours(4.5)) == ids(w3, w1, w2)

    assert await listed(api, planner, url) == ids(w3, w1, w2, w4)  # planned_start by default
    assert await listed(api, planner, url, sort="planned_start") == ids(w3, w1, w2, w4)
    assert await listed(api, planner, url, sort="-planned_start") == ids(w4, w2, w1, w3)
    assert await listed(api, planner, url, sort="id") == ids(w1, w2, w3, w4)
    assert await listed(api, planner, url, sort="-created_at") == ids(w4, w3, w2, w1)
    assert await listed(api, planner, url, sort="id", limit=2, offset=1) == ([w2, w3], 4)
    assert await listed(api, planner, url, sort="id", offset=4) == ([], 4)
    assert problem_fields(await api.client.get(url, params={"sort": "colour"}, headers=planner)) == ["sort"]


async def test_worker_sees_only_work_orders_with_a_stage_of_theirs(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-g")
    worker_id, worker = await api.signed_in(Role.WORKER, "ali")
    _, idle = await api.signed_in(Role.WORKER, "veli")
    mine, hidden, also_mine = [await create_work_order(api, planner, lot_no=f"L-{index}") for index in range(3)]
    for stage in mine["stages"]:  # two stages of one work order: still listed once
        await assign(api, planner, stage["id"], worker_id)
    await assign(api, planner, also_mine["stages"][1]["id"], worker_id)

    assert await listed(api, worker, "/workorders", sort="id") == ([mine["id"], also_mine["id"]], 2)
    assert await listed(api, idle, "/workorders") == ([], 0)
    assert (await api.client.get(f"/workorders/{mine['id']}", headers=worker)).status_code == 200
    for url in (
        f"/workorders/{hidden['id']}",
        f"/workorders/{hidden['id']}/stages",
        f"/stages/{hidden['stages'][0]['id']}",
    ):
        response = await api.client.get(url, headers=worker)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), url


async def test_plan_changes_until_a_stage_starts_then_only_notes(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-h")
    work_order = await create_work_order(api, planner)
    url = f"/workorders/{work_order['id']}"
    changes = {"product_code": "P-200", "lot_no": "L-9", "qty": 250}
    changes |= {"planned_start": hours(-1), "planned_end": hours(5)}
    changed = await api.client.patch(url, json=jsonable(changes), headers=planner)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["product_code"], body["lot_no"], body["qty"]) == ("P-200", "L-9", 250)
    assert (when(body["planned_start"]), when(body["planned_end"])) == (hours(-1), hours(5))

    await act(api, planner, work_order["stages"][0]["id"], "start", hours(0.1))
    locked = await api.client.patch(url, json={"qty": 300, "notes": "rush"}, headers=planner)
    assert (locked.status_code, locked.json()["code"]) == (409, "plan_locked")
    later = await api.client.patch(url, json={"planned_end": hours(6).isoformat()}, headers=planner)
    assert (later.status_code, later.json()["code"]) == (409, "plan_locked")
    noted = await api.client.patch(url, json={"notes": "  mould 4 only  "}, headers=planner)
    assert noted.status_code == 200
    assert (noted.json()["notes"], noted.json()["qty"], noted.json()["status"]) == ("mould 4 only", 250, "in_progress")
    cleared = await api.client.patch(url, json={"notes": None}, headers=planner)
    assert cleared.json()["notes"] is None
    assert (await api.client.get(url, headers=planner)).json()["planned_end"] == body["planned_end"]


async def test_plan_changes_are_validated(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-i")
    work_order = await create_work_order(api, planner, notes="keep")
    url = f"/workorders/{work_order['id']}"

    async def patch(body: dict[str, Any]) -> list[str]:
        return problem_fields(await api.client.patch(url, json=body, headers=planner))

    assert await patch({"planned_start": hours(0.25).isoformat()}) == ["planned_start"]  # cuts Enjeksiyon
    assert await patch({"planned_end": hours(3).isoformat()}) == ["planned_end"]  # cuts Montaj
    assert await patch({"planned_start": hours(5).isoformat()}) == ["planned_end"]  # after the end
    assert await patch({"qty": None}) == ["qty"]
    assert await patch({"product_code": None}) == ["product_code"]
    assert await patch({"qty": 0}) == ["qty"]
    assert await patch({"planned_start": "2026-03-10T31:00:00"}) == ["planned_start"]
    assert await patch({"colour": "red"}) == ["colour"]
    unchanged = (await api.client.get(url, headers=planner)).json()
    assert (unchanged["qty"], unchanged["product_code"], unchanged["notes"]) == (100, "P-100", "keep")
    assert (when(unchanged["planned_start"]), when(unchanged["planned_end"])) == (T0, hours(4))


# Cancel


async def test_cancel_keeps_history_and_stops_work(api: Api) -> None:
    planner_id, planner = await api.signed_in(Role.PLANNER, "plan-j")
    worker_id, worker = await api.signed_in(Role.WORKER, "hasan")
    work_order = await create_work_order(api, planner)
    first, second = (stage["id"] for stage in work_order["stages"])
    await assign(api, planner, first, worker_id)
    await act(api, worker, first, "start", hours(0.1))
    assert total_of(await api.client.get("/me/stages", headers=worker)) == 1

    api.set_now(hours(1))
    url = f"/workorders/{work_order['id']}/cancel"
    cancelled = await api.client.post(url, json={"reason": "customer withdrew"}, headers=planner)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["cancelled_by_id"], when(body["cancelled_at"])) == ("cancelled", planner_id, hours(1))
    assert body["cancel_reason"] == "customer withdrew"
    assert [stage["status"] for stage in body["stages"]] == ["in_progress", "planned"]
    events = (await api.client.get(f"/stages/{first}/events", headers=planner)).json()
    assert [(event["kind"], event["user_id"]) for event in events] == [("start", worker_id)]

    again = await api.client.post(url, json={"reason": "twice"}, headers=planner)
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    done = {"good_qty": 1, "scrap_qty": 0}
    for blocked in (
        await api.client.post(f"/stages/{second}/start", headers=planner),
        await api.client.post(f"/stages/{first}/done", json=done, headers=worker),
    ):
        assert (blocked.status_code, blocked.json()["code"]) == (409, "work_order_cancelled")
    gone = await api.client.get("/me/stages", headers=worker)
    assert (gone.json(), total_of(gone)) == ([], 0)
    reason = (await api.client.get(f"/workorders/{work_order['id']}", headers=planner)).json()["cancel_reason"]
    assert reason == "customer withdrew"


async def test_a_done_work_order_cannot_be_cancelled(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-k")
    work_order = await create_work_order(api, planner)
    await drive(api, planner, work_order, (1, 2), (2, 3))
    refused = await api.client.post(f"/workorders/{work_order['id']}/cancel", headers=planner)
    assert (refused.status_code, refused.json()["code"]) == (409, "invalid_transition")
    after = (await api.client.get(f"/workorders/{work_order['id']}", headers=planner)).json()
    assert (after["status"], after["cancelled_at"]) == ("done", None)
