"""Issues on stages: reported by the stage's workers, acknowledged and resolved by planners, listed and counted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.models import Role
from tests.support.api import Api, make_settings, running_api
from tests.support.db import Database
from tests.support.tracking import (
    assign,
    create_work_order,
    hours,
    listed,
    move_issue,
    problem_fields,
    report_issue,
    when,
)


async def test_issue_life_is_recorded_and_drives_open_issue_counts(api: Api) -> None:
    planner_id, planner = await api.signed_in(Role.PLANNER, "plan-a")
    worker_id, worker = await api.signed_in(Role.WORKER, "ayse")
    work_order = await create_work_order(api, planner)
    quiet = await create_work_order(api, planner, lot_no="L-2")
    stage_id = work_order["stages"][0]["id"]
    await assign(api, planner, stage_id, worker_id)

    issue = await report_issue(api, worker, stage_id, "machine_breakdown")
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
    _, planner = await api.signed_in(Role.PLANNER, "plan-b")
    worker_id, worker = await api.signed_in(Role.WORKER, "mehmet")
    _, stranger = await api.signed_in(Role.WORKER, "stranger")
    stage_id = (await create_work_order(api, planner))["stages"][0]["id"]
    await assign(api, planner, stage_id, worker_id)
    url = f"/stages/{stage_id}/issue"

    refused = await api.client.post(url, json={"type": "quality", "description": "burrs"}, headers=stranger)
    assert refused.status_code == 404  # the stranger has no stage of this work order: it is out of sight
    assert refused.json()["code"] == "not_found"
    unknown = await api.client.post(url, json={"type": "fire", "description": "smoke"}, headers=worker)
    assert problem_fields(unknown) == ["type"]
    for description in ("", "   ", "x" * 2001):
        bad = await api.client.post(url, json={"type": "quality", "description": description}, headers=worker)
        assert problem_fields(bad) == ["description"]
    assert (await api.client.get(f"/stages/{stage_id}/issues", headers=planner)).json() == []

    longest = await api.client.post(url, json={"type": "quality", "description": "x" * 2000}, headers=worker)
    assert longest.status_code == 201


async def test_issue_moves_only_open_to_ack_to_resolved(api: Api) -> None:
    _, planner = await api.signed_in(Role.PLANNER, "plan-c")
    work_order = await create_work_order(api, planner)
    first, second = (stage["id"] for stage in work_order["stages"])
    issue = await report_issue(api, planner, first)

    skipped = await move_issue(api, planner, issue, "resolved")
    assert skipped.status_code == 409
    assert (skipped.json()["code"], skipped.json()["current_status"]) == ("invalid_transition", "open")
    elsewhere = await api.client.patch(
        f"/stages/{second}/issues/{issue['id']}", json={"status": "ack"}, headers=planner
    )
    assert elsewhere.status_code == 404
    assert problem_fields(await move_issue(api, planner, issue, "closed")) == ["status"]

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
    _, planner = await api.signed_in(Role.PLANNER, "plan-d")
    worker_id, worker = await api.signed_in(Role.WORKER, "fatma")
    one = await create_work_order(api, planner)
    two = await create_work_order(api, planner, lot_no="L-2")
    s1, s2 = (stage["id"] for stage in one["stages"])
    s3 = two["stages"][1]["id"]
    await assign(api, planner, s3, worker_id)

    before = datetime.now(UTC)
    i1 = await report_issue(api, planner, s1, "machine_breakdown")
    i2 = await report_issue(api, planner, s2, "quality")
    middle = datetime.now(UTC)
    i3 = await report_issue(api, worker, s3, "quality")
    i4 = await report_issue(api, worker, s3, "safety")
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


async def test_the_app_can_learn_the_issue_types_with_their_labels(database: Database) -> None:
    settings = make_settings(database.url)
    settings.tracking.issue_types = ["machine_breakdown", "mold_change", "other"]
    async with running_api(database, settings) as api:
        worker = await api.actor(Role.WORKER)
        response = await api.client.get("/issue-types", headers=worker)
        assert response.status_code == 200
        assert response.json() == [
            {"code": "machine_breakdown", "labels": {"tr": "Makine arızası", "en": "Machine breakdown"}},
            {"code": "mold_change", "labels": {"tr": "mold_change", "en": "mold_change"}},  # no label: its code
            {"code": "other", "labels": {"tr": "Diğer", "en": "Other"}},
        ]
        schema = (await api.client.get("/openapi.json")).json()["components"]["schemas"]["IssueCreate"]
        assert schema["properties"]["type"]["enum"] == ["machine_breakdown", "mold_change", "other"]
        assert (await api.client.get("/issue-types")).status_code == 401


async def test_issues_carry_the_original_apps_field_names_too(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    stage_id = (await create_work_order(api, admin))["stages"][0]["id"]
    reported = await report_issue(api, admin, stage_id)
    assert reported["work_order_stage_id"] == reported["stage_id"] == stage_id
    assert reported["created_by"] == reported["reported_by_id"] is not None
