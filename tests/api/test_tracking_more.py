"""Production tracking as its users see it: issues, work-order lists and changes, cancel, assignments, metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import Response

from core.db import session_factory, transaction
from core.models import Machine, Role
from tests.conftest import Api

T0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
Headers = dict[str, str]
PLAN: dict[str, Any] = {"product_code": "P-100", "lot_no": "L-1", "qty": 100, "planned_start": T0}


def hours(value: float) -> datetime:
    """T0 plus some hours."""
    return T0 + timedelta(hours=value)


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as ISO 8601 strings, everything else as it is."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in values.items()}


def plan(name: str, start: datetime, end: datetime) -> dict[str, str]:
    """A stage as the API takes it."""
    return {"stage_name": name, "planned_start": start.isoformat(), "planned_end": end.isoformat()}


async def user(api: Api, name: str, role: Role = Role.WORKER) -> tuple[int, Headers]:
    """A user of this role, logged in: its id and its headers."""
    account = await api.create_user(name, role)
    return account.id, await api.login(name)


async def make_machine(api: Api, code: str) -> int:
    """A registered machine, inserted directly (stages refer to machines by id)."""
    async with transaction(session_factory(api.engine)) as session:
        machine = Machine(site="plant-1", code=code, name=f"Press {code}")
        session.add(machine)
    return machine.id


async def make_work_order(api: Api, headers: Headers, **overrides: Any) -> dict[str, Any]:
    """A work order planned 08:00-12:00 with the default stages (Enjeksiyon 08:00-08:30, Montaj 08:30-12:00)."""
    body = PLAN | {"planned_end": T0 + timedelta(hours=4)} | overrides
    response = await api.client.post("/workorders", json=jsonable(body), headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def assign(api: Api, headers: Headers, stage_id: int, user_id: int) -> dict[str, Any]:
    """Assign a user to a stage, expecting success."""
    response = await api.client.post(f"/stages/{stage_id}/assignments", json={"user_id": user_id}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def act(api: Api, headers: Headers, stage_id: int, action: str, at: datetime) -> dict[str, Any]:
    """Start, pause, resume or finish a stage at `at` on the app's clock, expecting success."""
    api.set_now(at)
    body = {"pause": {"reason": "material missing"}, "done": {"good_qty": 10, "scrap_qty": 1}}.get(action)
    response = await api.client.post(f"/stages/{stage_id}/{action}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def drive(api: Api, headers: Headers, work_order: dict[str, Any], *runs: tuple[float, float | None]) -> None:
    """Start each stage at the first hour of its run and finish it at the second (None: leave it running)."""
    for stage, (start, end) in zip(work_order["stages"], runs, strict=False):
        await act(api, headers, stage["id"], "start", hours(start))
        if end is not None:
            await act(api, headers, stage["id"], "done", hours(end))


async def report(api: Api, headers: Headers, stage_id: int, kind: str = "quality") -> dict[str, Any]:
    """Report an issue on a stage, expecting success."""
    body = {"type": kind, "description": f"{kind} problem"}
    response = await api.client.post(f"/stages/{stage_id}/issue", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def move_issue(
    api: Api, headers: Headers, issue: dict[str, Any], status: str, note: str | None = None
) -> Response:
    """PATCH an issue's status; returns the response."""
    url = f"/stages/{issue['stage_id']}/issues/{issue['id']}"
    return await api.client.patch(url, json={"status": status, "note": note}, headers=headers)


async def listed(api: Api, headers: Headers, url: str, **params: Any) -> tuple[list[int], int]:
    """The ids on one page of a list and its total."""
    response = await api.client.get(url, params=jsonable(params), headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]], response.json()["total"]


def fields(response: Response) -> list[str]:
    """The field names of a 422 problem."""
    assert response.status_code == 422, response.text
    return [error["field"] for error in response.json()["errors"]]


def when(value: str) -> datetime:
    """A timestamp from a response."""
    return datetime.fromisoformat(value)


# Issues


async def test_issue_life_is_recorded_and_drives_open_issue_counts(api: Api) -> None:
    planner_id, planner = await user(api, "plan-a", Role.PLANNER)
    worker_id, worker = await user(api, "ayse")
    work_order = await make_work_order(api, planner)
    quiet = await make_work_order(api, planner, lot_no="L-2")
    stage_id = work_order["stages"][0]["id"]
    await assign(api, planner, stage_id, worker_id)

    issue = await report(api, worker, stage_id, "machine_breakdown")
    assert issue["status"] == "open"
    assert issue["reported_by_id"] == worker_id
    assert (issue["stage_id"], issue["work_order_id"]) == (stage_id, work_order["id"])
    assert issue["acked_at"] is None
    assert issue["resolved_at"] is None

    async def counts() -> tuple[int, int, list[int], list[int]]:
        order = (await api.client.get(f"/workorders/{work_order['id']}", headers=planner)).json()
        with_open, _ = await listed(api, planner, "/workorders", has_open_issues="true")
        without, _ = await listed(api, planner, "/workorders", has_open_issues="false")
        return order["open_issues"], order["stages"][0]["open_issues"], with_open, without

    assert await counts() == (1, 1, [work_order["id"]], [quiet["id"]])

    api.set_now(hours(1))
    acked = await move_issue(api, planner, issue, "ack", "electrician on the way")
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "ack"
    assert acked.json()["acked_by_id"] == planner_id
    assert when(acked.json()["acked_at"]) == hours(1)
    assert acked.json()["ack_note"] == "electrician on the way"
    assert await counts() == (1, 1, [work_order["id"]], [quiet["id"]])  # acknowledged is still open

    api.set_now(hours(2))
    resolved = (await move_issue(api, planner, issue, "resolved", "heater band replaced")).json()
    assert resolved["status"] == "resolved"
    assert (resolved["resolved_by_id"], when(resolved["resolved_at"])) == (planner_id, hours(2))
    assert resolved["resolution_note"] == "heater band replaced"
    assert (resolved["ack_note"], when(resolved["acked_at"])) == ("electrician on the way", hours(1))
    assert await counts() == (0, 0, [], [work_order["id"], quiet["id"]])


async def test_issue_reports_are_checked(api: Api) -> None:
    _, planner = await user(api, "plan-b", Role.PLANNER)
    worker_id, worker = await user(api, "mehmet")
    _, stranger = await user(api, "stranger")
    stage_id = (await make_work_order(api, planner))["stages"][0]["id"]
    await assign(api, planner, stage_id, worker_id)
    url = f"/stages/{stage_id}/issue"

    refused = await api.client.post(url, json={"type": "quality", "description": "burrs"}, headers=stranger)
    assert refused.status_code == 403
    assert refused.json()["code"] == "stage_not_assigned"
    unknown = await api.client.post(url, json={"type": "fire", "description": "smoke"}, headers=worker)
    assert fields(unknown) == ["type"]
    for description in ("", "   ", "x" * 2001):
        bad = await api.client.post(url, json={"type": "quality", "description": description}, headers=worker)
        assert fields(bad) == ["description"]
    assert (await api.client.get(f"/stages/{stage_id}/issues", headers=planner)).json() == []

    longest = await api.client.post(url, json={"type": "quality", "description": "x" * 2000}, headers=worker)
    assert longest.status_code == 201


async def test_issue_moves_only_open_to_ack_to_resolved(api: Api) -> None:
    _, planner = await user(api, "plan-c", Role.PLANNER)
    work_order = await make_work_order(api, planner)
    first, second = (stage["id"] for stage in work_order["stages"])
    issue = await report(api, planner, first)

    skipped = await move_issue(api, planner, issue, "resolved")
    assert skipped.status_code == 409
    assert (skipped.json()["code"], skipped.json()["current_status"]) == ("invalid_transition", "open")
    elsewhere = await api.client.patch(
        f"/stages/{second}/issues/{issue['id']}", json={"status": "ack"}, headers=planner
    )
    assert elsewhere.status_code == 404
    assert fields(await move_issue(api, planner, issue, "closed")) == ["status"]

    assert (await move_issue(api, planner, issue, "ack")).status_code == 200
    twice = await move_issue(api, planner, issue, "ack")
    assert (twice.status_code, twice.json()["code"]) == (409, "invalid_transition")
    assert (await move_issue(api, planner, issue, "resolved")).status_code == 200
    for status in ("ack", "open", "resolved"):
        again = await move_issue(api, planner, issue, status)
        assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    stored = (await api.client.get(f"/stages/{first}/issues", headers=planner)).json()
    assert [item["status"] for item in stored] == ["resolved"]


async def test_issue_list_filters_pages_and_is_for_planners(api: Api) -> None:
    _, planner = await user(api, "plan-d", Role.PLANNER)
    worker_id, worker = await user(api, "fatma")
    one = await make_work_order(api, planner)
    two = await make_work_order(api, planner, lot_no="L-2")
    s1, s2 = (stage["id"] for stage in one["stages"])
    s3 = two["stages"][1]["id"]
    await assign(api, planner, s3, worker_id)

    before = datetime.now(UTC)
    i1 = await report(api, planner, s1, "machine_breakdown")
    i2 = await report(api, planner, s2, "quality")
    middle = datetime.now(UTC)
    i3 = await report(api, worker, s3, "quality")
    i4 = await report(api, worker, s3, "safety")
    after = datetime.now(UTC)
    await move_issue(api, planner, i1, "ack")
    await move_issue(api, planner, i1, "resolved")
    await move_issue(api, planner, i2, "ack")
    ids = {name: issue["id"] for name, issue in {"i1": i1, "i2": i2, "i3": i3, "i4": i4}.items()}

    async def issues(**params: Any) -> list[str]:
        found, total = await listed(api, planner, "/issues", **params)
        assert total == len(found)
        return [name for issue_id in found for name, known in ids.items() if known == issue_id]

    assert await issues() == ["i4", "i3", "i2", "i1"]  # newest first
    assert await issues(status="open") == ["i4", "i3"]
    assert await issues(status="ack") == ["i2"]
    assert await issues(status="resolved") == ["i1"]
    assert await issues(type="quality") == ["i3", "i2"]
    assert await issues(work_order_stage_id=s3) == ["i4", "i3"]
    assert await issues(work_order_id=one["id"]) == ["i2", "i1"]
    assert await issues(status="open", type="safety") == ["i4"]
    assert await issues(created_from=middle) == ["i4", "i3"]
    assert await issues(created_to=middle) == ["i2", "i1"]
    assert await issues(created_from=before, created_to=after) == ["i4", "i3", "i2", "i1"]
    assert await issues(created_from=after) == []

    page, total = await listed(api, planner, "/issues", limit=2, offset=1)
    assert (page, total) == ([i3["id"], i2["id"]], 4)
    assert (await api.client.get("/issues", headers=worker)).status_code == 403
    on_stage = await api.client.get(f"/stages/{s3}/issues", headers=worker)
    assert [issue["id"] for issue in on_stage.json()] == [i4["id"], i3["id"]]
    assert {issue["work_order_id"] for issue in on_stage.json()} == {two["id"]}


# Work-order list, visibility, changes


async def test_list_filters_by_status_derived_from_stages(api: Api) -> None:
    _, planner = await user(api, "plan-e", Role.PLANNER)
    planned, running, half, paused, done, cancelled = [
        await make_work_order(api, planner, lot_no=f"L-{index}") for index in range(6)
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
    assert fields(await api.client.get("/workorders", params={"status": "paused"}, headers=planner)) == ["status"]


async def test_list_filters_by_codes_and_window_sorts_and_pages(api: Api) -> None:
    _, planner = await user(api, "plan-f", Role.PLANNER)

    async def order(product: str, lot: str, start: float, end: float) -> int:
        made = await make_work_order(
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
    page = (await api.client.get(url, params={"sort": "id", "limit": 2, "offset": 1}, headers=planner)).json()
    assert ([item["id"] for item in page["items"]], page["total"], page["limit"], page["offset"]) == ([w2, w3], 4, 2, 1)
    assert await listed(api, planner, url, sort="id", offset=4) == ([], 4)
    assert fields(await api.client.get(url, params={"sort": "colour"}, headers=planner)) == ["sort"]
    naive = await api.client.get(url, params={"planned_from": "2026-03-10T08:00:00"}, headers=planner)
    assert fields(naive) == ["planned_from"]


async def test_worker_sees_only_work_orders_with_a_stage_of_theirs(api: Api) -> None:
    _, planner = await user(api, "plan-g", Role.PLANNER)
    worker_id, worker = await user(api, "ali")
    _, idle = await user(api, "veli")
    mine, hidden, also_mine = [await make_work_order(api, planner, lot_no=f"L-{index}") for index in range(3)]
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
    _, planner = await user(api, "plan-h", Role.PLANNER)
    work_order = await make_work_order(api, planner)
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
    _, planner = await user(api, "plan-i", Role.PLANNER)
    work_order = await make_work_order(api, planner, notes="keep")
    url = f"/workorders/{work_order['id']}"

    async def patch(body: dict[str, Any]) -> list[str]:
        return fields(await api.client.patch(url, json=body, headers=planner))

    assert await patch({"planned_start": hours(0.25).isoformat()}) == ["planned_start"]  # cuts Enjeksiyon
    assert await patch({"planned_end": hours(3).isoformat()}) == ["planned_end"]  # cuts Montaj
    assert await patch({"planned_start": hours(5).isoformat()}) == ["planned_end"]  # after the end
    assert await patch({"qty": None}) == ["qty"]
    assert await patch({"product_code": None}) == ["product_code"]
    assert await patch({"qty": 0}) == ["qty"]
    assert await patch({"planned_start": "2026-03-10T07:00:00"}) == ["planned_start"]
    assert await patch({"colour": "red"}) == ["colour"]
    unchanged = (await api.client.get(url, headers=planner)).json()
    assert (unchanged["qty"], unchanged["product_code"], unchanged["notes"]) == (100, "P-100", "keep")
    assert (when(unchanged["planned_start"]), when(unchanged["planned_end"])) == (T0, hours(4))


# Cancel


async def test_cancel_keeps_history_and_stops_work(api: Api) -> None:
    planner_id, planner = await user(api, "plan-j", Role.PLANNER)
    worker_id, worker = await user(api, "hasan")
    work_order = await make_work_order(api, planner)
    first, second = (stage["id"] for stage in work_order["stages"])
    await assign(api, planner, first, worker_id)
    await act(api, worker, first, "start", hours(0.1))
    assert (await api.client.get("/me/stages", headers=worker)).json()["total"] == 1

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
    gone = (await api.client.get("/me/stages", headers=worker)).json()
    assert (gone["items"], gone["total"]) == ([], 0)
    reason = (await api.client.get(f"/workorders/{work_order['id']}", headers=planner)).json()["cancel_reason"]
    assert reason == "customer withdrew"


async def test_a_done_work_order_cannot_be_cancelled(api: Api) -> None:
    _, planner = await user(api, "plan-k", Role.PLANNER)
    work_order = await make_work_order(api, planner)
    await drive(api, planner, work_order, (1, 2), (2, 3))
    refused = await api.client.post(f"/workorders/{work_order['id']}/cancel", headers=planner)
    assert (refused.status_code, refused.json()["code"]) == (409, "invalid_transition")
    after = (await api.client.get(f"/workorders/{work_order['id']}", headers=planner)).json()
    assert (after["status"], after["cancelled_at"]) == ("done", None)


# Assignments


async def test_workers_share_a_stage_until_one_is_taken_off(api: Api) -> None:
    _, planner = await user(api, "plan-l", Role.PLANNER)
    first_id, first = await user(api, "emine")
    second_id, second = await user(api, "osman")
    gone = await api.create_user("retired", Role.WORKER, active=False)
    work_order = await make_work_order(api, planner)
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
        assert fields(await api.client.post(url, json={"user_id": user_id}, headers=planner)) == ["user_id"]

    removed = await api.client.delete(f"{url}/{second_id}", headers=planner)
    assert (removed.status_code, removed.content) == (204, b"")
    assert (await api.client.get(f"/workorders/{work_order['id']}", headers=second)).status_code == 404
    start = await api.client.post(f"/stages/{stage_id}/start", headers=second)
    assert (start.status_code, start.json()["code"]) == (403, "stage_not_assigned")
    assert (await api.client.delete(f"{url}/{second_id}", headers=planner)).status_code == 404
    stage = (await api.client.get(f"/stages/{stage_id}", headers=first)).json()
    assert [a["user_id"] for a in stage["assignees"]] == [first_id]
    assert (await act(api, first, stage_id, "start", hours(0.1)))["status"] == "in_progress"


async def test_my_stages_lists_soonest_first_with_their_work_orders(api: Api) -> None:
    _, planner = await user(api, "plan-m", Role.PLANNER)
    worker_id, worker = await user(api, "zeynep")
    other_id, _ = await user(api, "kemal")
    today = await make_work_order(api, planner, product_code="P-TODAY")
    early = await make_work_order(api, planner, product_code="P-EARLY", planned_start=hours(-2), planned_end=hours(-1))
    late = await make_work_order(api, planner, product_code="P-LATE", planned_start=hours(2), planned_end=hours(6))
    montaj, early_enj, late_enj = today["stages"][1]["id"], early["stages"][0]["id"], late["stages"][0]["id"]
    for stage_id in (late_enj, montaj, early_enj):
        await assign(api, planner, stage_id, worker_id)
    await assign(api, planner, today["stages"][0]["id"], other_id)
    await act(api, worker, late_enj, "start", hours(2.1))

    mine = (await api.client.get("/me/stages", headers=worker)).json()
    assert mine["total"] == 3
    assert [(item["stage"]["id"], item["work_order"]["product_code"]) for item in mine["items"]] == [
        (early_enj, "P-EARLY"),
        (montaj, "P-TODAY"),
        (late_enj, "P-LATE"),
    ]
    assert mine["items"][1]["work_order"]["id"] == today["id"]
    assert mine["items"][1]["stage"]["stage_name"] == "Montaj"
    running = (await api.client.get("/me/stages", params={"status": "in_progress"}, headers=worker)).json()
    assert ([item["stage"]["id"] for item in running["items"]], running["total"]) == ([late_enj], 1)
    planned = (
        await api.client.get("/me/stages", params={"status": "planned", "limit": 1, "offset": 1}, headers=worker)
    ).json()
    assert ([item["stage"]["id"] for item in planned["items"]], planned["total"]) == ([montaj], 2)
    assert (await api.client.get("/me/stages", params={"status": "done"}, headers=worker)).json()["total"] == 0


# Stage re-plan


async def test_planned_stage_is_replanned_inside_its_work_order(api: Api) -> None:
    _, planner = await user(api, "plan-n", Role.PLANNER)
    stages = [plan("Enjeksiyon", T0, hours(2)), plan("Montaj", hours(3), hours(6))]
    work_order = await make_work_order(api, planner, planned_end=hours(8), stages=stages)
    first, second = (stage["id"] for stage in work_order["stages"])

    async def patch(stage_id: int, **changes: Any) -> Response:
        return await api.client.patch(f"/stages/{stage_id}", json=jsonable(changes), headers=planner)

    moved = await patch(first, stage_name="Kalıp", planned_start=hours(0.5), planned_end=hours(2.5))
    assert moved.status_code == 200, moved.text
    assert (moved.json()["stage_name"], when(moved.json()["planned_start"])) == ("Kalıp", hours(0.5))
    assert when(moved.json()["planned_end"]) == hours(2.5)
    assert fields(await patch(first, planned_end=hours(3.5))) == ["planned_end"]  # runs into Montaj
    assert fields(await patch(second, planned_start=hours(2))) == ["planned_start"]  # Kalıp ends 2.5
    assert (await patch(second, planned_end=hours(9))).status_code == 422  # past the work order's end
    assert (await patch(first, planned_start=hours(-1))).status_code == 422  # before its start
    assert (await patch(first, planned_start=hours(2.5))).status_code == 422  # empty stage
    assert (await patch(second, planned_start=hours(2.5), planned_end=hours(8))).status_code == 200  # touching is fine
    after = (await api.client.get(f"/workorders/{work_order['id']}/stages", headers=planner)).json()
    windows = [(s["stage_name"], when(s["planned_start"]), when(s["planned_end"])) for s in after]
    assert windows == [("Kalıp", hours(0.5), hours(2.5)), ("Montaj", hours(2.5), hours(8))]


async def test_started_stage_keeps_its_plan_but_takes_a_machine(api: Api) -> None:
    _, planner = await user(api, "plan-o", Role.PLANNER)
    work_order = await make_work_order(api, planner)
    stage_id = work_order["stages"][0]["id"]
    await act(api, planner, stage_id, "start", hours(0.1))
    url = f"/stages/{stage_id}"
    press = await make_machine(api, "press-7")

    for change in ({"planned_end": hours(0.75).isoformat()}, {"stage_name": "Baskı"}):
        locked = await api.client.patch(url, json=change, headers=planner)
        assert (locked.status_code, locked.json()["code"]) == (409, "plan_locked")
    assert fields(await api.client.patch(url, json={"machine_id": press + 1}, headers=planner)) == ["machine_id"]
    machine = await api.client.patch(url, json={"machine_id": press}, headers=planner)
    assert (machine.status_code, machine.json()["machine_id"], machine.json()["status"]) == (200, press, "in_progress")
    assert (await api.client.get(url, headers=planner)).json()["machine_id"] == press
    cleared = await api.client.patch(url, json={"machine_id": None}, headers=planner)
    assert (cleared.status_code, cleared.json()["machine_id"]) == (200, None)
    stage = (await api.client.get(url, headers=planner)).json()
    assert (stage["stage_name"], when(stage["planned_end"]), stage["machine_id"]) == ("Enjeksiyon", hours(0.5), None)


# Metrics summary

DAY = {"from": "2026-03-10T00:00:00Z", "to": "2026-03-11T00:00:00Z"}


async def summary_day(api: Api) -> dict[str, Any]:
    """Six work orders and the summary of 2026-03-10 (planned_start in [00:00, next 00:00))."""
    _, planner = await user(api, "plan-p", Role.PLANNER)
    # A 08:00-12:00: Enjeksiyon (plan end 08:30) 08:05-08:40 → +10; Montaj (plan end 12:00) 08:45-12:00 → 0; on time
    a = await make_work_order(api, planner)
    await drive(api, planner, a, (1 / 12, 2 / 3), (0.75, 4))
    # B 09:00-11:00: Enjeksiyon (plan end 09:30) 09:00-09:20 → -10; Montaj (plan end 11:00) 09:25-11:30 → +30; late
    b = await make_work_order(api, planner, planned_start=hours(1), planned_end=hours(3))
    await drive(api, planner, b, (1, 4 / 3), (17 / 12, 3.5))
    # C 10:00-14:00: Enjeksiyon (plan end 10:30) 10:00-10:50 → +20; Montaj running: in progress
    c = await make_work_order(api, planner, planned_start=hours(2), planned_end=hours(6))
    await drive(api, planner, c, (2, 17 / 6), (3, None))
    # D starts at 00:00 (the window's first instant, included) and is untouched: planned
    await make_work_order(api, planner, planned_start=hours(-8), planned_end=hours(-6))
    # E cancelled before anything started
    e = await make_work_order(api, planner, planned_start=hours(6), planned_end=hours(8))
    assert (await api.client.post(f"/workorders/{e['id']}/cancel", headers=planner)).status_code == 200
    # F starts at the next 00:00 (excluded) and ends late: it must not count anywhere
    f = await make_work_order(api, planner, planned_start=hours(16), planned_end=hours(18))
    await drive(api, planner, f, (16, 17), (17, 20))
    api.set_now(hours(7))
    response = await api.client.get("/metrics/summary", params=DAY, headers=planner)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_summary_counts_work_orders_planned_in_the_window(api: Api) -> None:
    body = await summary_day(api)
    assert (when(body["planned_from"]), when(body["planned_to"])) == (hours(-8), hours(16))
    assert body["work_orders"] == 5
    assert body["by_status"] == {"planned": 1, "in_progress": 1, "done": 2, "cancelled": 1}
    assert body["on_time_percent"] == 50.0  # A on time (12:00 ≤ 12:00), B late (11:30 > 11:00)
    assert body["avg_delay_min_by_stage"]["Montaj"] == 15.0  # (0 + 30) / 2; C's Montaj is not done


async def test_summary_averages_every_done_stage_of_the_window(api: Api) -> None:
    # docs/metrics.md: "the mean delay_min over the done stages of those work orders"; "only done stages count".
    # C's Enjeksiyon is done (+20) although C is in progress: (10 - 10 + 20) / 3 = 6.67.
    body = await summary_day(api)
    assert body["avg_delay_min_by_stage"] == {"Enjeksiyon": 6.67, "Montaj": 15.0}


async def test_summary_is_for_planners_over_a_real_window(api: Api) -> None:
    _, planner = await user(api, "plan-q", Role.PLANNER)
    _, admin = await user(api, "boss", Role.ADMIN)
    _, worker = await user(api, "selim")

    async def summary(headers: Headers, **params: str) -> Response:
        return await api.client.get("/metrics/summary", params=params, headers=headers)

    empty = (await summary(admin, **DAY)).json()
    assert (empty["work_orders"], empty["on_time_percent"], empty["avg_delay_min_by_stage"]) == (0, None, {})
    assert set(empty["by_status"].values()) == {0}
    assert (await summary(worker, **DAY)).status_code == 403
    assert fields(await summary(planner, **{"from": DAY["to"], "to": DAY["from"]})) == ["from"]
    assert fields(await summary(planner, **{"from": DAY["from"], "to": DAY["from"]})) == ["from"]
    assert fields(await summary(planner, to=DAY["to"])) == ["from"]
    assert fields(await summary(planner, **{"from": "2026-03-10T00:00:00", "to": DAY["to"]})) == ["from"]
