"""The original app's mobile client, played against Shopfloor on SQLite and PostgreSQL.

Written only from what the original system exposed (issue 14): its nine endpoints, and its models' fields —
User (id, username, password_hash, role), WorkOrder (id, product_code, lot_no, qty, planned_start, planned_end),
WorkOrderStage (id, work_order_id, stage_name, planned_start, planned_end, actual_start, actual_end, status), Issue
(id, work_order_stage_id, type, description, created_by, created_at). The client sends exactly what the original
accepted (naive local times, bodiless start/done, the OAuth2 login form) and reads only the original's field names,
so a renamed or removed field, a changed list shape or a newly required input breaks a test here.
Shopfloor-only steps the original did not have (an admin assigning the worker) use Shopfloor's own API and say so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.models import Role
from core.settings import TrackingSettings
from tests.support.api import Api, Headers, bearer, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import TEST_PASSWORD

PLANT = ZoneInfo("Europe/Istanbul")
WORK_ORDER_FIELDS = {
    "id": int,
    "product_code": str,
    "lot_no": str,
    "qty": int,
    "planned_start": str,
    "planned_end": str,
}
STAGE_FIELDS = {
    "id": int,
    "work_order_id": int,
    "stage_name": str,
    "planned_start": str,
    "planned_end": str,
    "actual_start": (str, type(None)),
    "actual_end": (str, type(None)),
    "status": str,
}
ISSUE_FIELDS = {
    "id": int,
    "work_order_stage_id": int,
    "type": str,
    "description": str,
    "created_by": (int, type(None)),
    "created_at": str,
}
USER_FIELDS = {"id": int, "username": str, "role": str}
ORIGINAL_STATUSES = {"planned", "in_progress", "done"}


@pytest.fixture
async def app(database: Database) -> AsyncIterator[Api]:
    """Shopfloor as a plant that came from the original app runs it: plant time zone set, registration open."""
    settings = make_settings(database.url, allow_self_registration=True)
    settings = settings.model_copy(update={"tracking": TrackingSettings(plant_timezone="Europe/Istanbul")})
    async with running_api(database, settings) as api:
        yield api


def has_original_fields(body: dict[str, Any], fields: dict[str, Any]) -> None:
    """Every field the original sent, with the original's JSON type (more fields are allowed)."""
    missing = sorted(set(fields) - set(body))
    assert not missing, f"missing original fields {missing} in {body}"
    wrong = {name: body[name] for name, kind in fields.items() if not isinstance(body[name], kind)}
    assert not wrong, f"fields of another type than the original's: {wrong}"


def local(text: str) -> datetime:
    """A response time (ISO 8601, which must carry an offset) in the plant's zone."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.tzinfo is not None, f"{text} has no offset"
    return moment.astimezone(PLANT)


async def login_form(app: Api, username: str, password: str) -> Headers:
    """The original client's login: the OAuth2 password form, not JSON."""
    response = await app.client.post(
        "/auth/login",
        data={"username": username, "password": password, "grant_type": "password"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["access_token"], str)
    assert body["token_type"].lower() == "bearer"
    return bearer(body["access_token"])


async def create_work_order(app: Api, planner: Headers) -> dict[str, Any]:
    """POST /workorders/ with exactly the original's fields and naive local times."""
    response = await app.client.post(
        "/workorders/",
        json={
            "product_code": "PRD-100",
            "lot_no": "LOT-7",
            "qty": 120,
            "planned_start": "2026-12-03T08:00:00",
            "planned_end": "2026-12-03T16:30:00",
        },
        headers=planner,
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_planner_creates_and_lists_work_orders_as_the_original_did(app: Api) -> None:
    planner = await app.actor(Role.PLANNER)
    created = await create_work_order(app, planner)
    has_original_fields(created, WORK_ORDER_FIELDS)
    # Naive times are the plant's local times, and come back as the same wall time (with an offset now).
    assert (local(created["planned_start"]), local(created["planned_end"])) == (
        datetime(2026, 12, 3, 8, 0, tzinfo=PLANT),
        datetime(2026, 12, 3, 16, 30, tzinfo=PLANT),
    )
    assert (created["product_code"], created["lot_no"], created["qty"]) == ("PRD-100", "LOT-7", 120)

    listed = await app.client.get("/workorders/", headers=planner)
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json(), list), "the original returned a JSON array"
    [row] = [row for row in listed.json() if row["id"] == created["id"]]
    has_original_fields(row, WORK_ORDER_FIELDS)

    one = await app.client.get(f"/workorders/{created['id']}", headers=planner)
    assert one.status_code == 200, one.text
    has_original_fields(one.json(), WORK_ORDER_FIELDS)

    stages = await app.client.get(f"/workorders/{created['id']}/stages", headers=planner)
    assert stages.status_code == 200, stages.text
    assert isinstance(stages.json(), list)
    assert stages.json(), "a new work order gets the plant's default stages"
    for stage in stages.json():
        has_original_fields(stage, STAGE_FIELDS)
        assert stage["work_order_id"] == created["id"]
        assert (stage["status"], stage["actual_start"], stage["actual_end"]) == ("planned", None, None)


async def test_a_worker_registers_logs_in_and_works_a_stage_through_the_original_calls(app: Api) -> None:
    registered = await app.client.post(
        "/auth/register", json={"username": "ayse", "password": "ayse-parola-2026", "role": "worker"}
    )
    assert registered.status_code in (200, 201), registered.text
    has_original_fields(registered.json(), USER_FIELDS)
    assert registered.json()["role"] == "worker"
    worker_id = registered.json()["id"]
    worker = await login_form(app, "ayse", "ayse-parola-2026")

    planner = await app.actor(Role.PLANNER)
    work_order = await create_work_order(app, planner)
    first = (await app.client.get(f"/workorders/{work_order['id']}/stages", headers=planner)).json()[0]
    # Not in the original: Shopfloor shows a worker only the stages they are assigned to.
    assigned = await app.client.post(f"/stages/{first['id']}/assignments", json={"user_id": worker_id}, headers=planner)
    assert assigned.status_code in (200, 201), assigned.text

    listed = await app.client.get("/workorders/", headers=worker)
    assert listed.status_code == 200, listed.text
    assert [row["id"] for row in listed.json()] == [work_order["id"]]
    stages = (await app.client.get(f"/workorders/{work_order['id']}/stages", headers=worker)).json()
    assert [stage["id"] for stage in stages] == [first["id"]]

    started = await app.client.post(f"/stages/{first['id']}/start", headers=worker)  # no body, as the original
    assert started.status_code == 200, started.text
    has_original_fields(started.json(), STAGE_FIELDS)
    assert started.json()["status"] == "in_progress"
    assert started.json()["actual_start"] is not None

    reported = await app.client.post(
        f"/stages/{first['id']}/issue",
        json={"type": "material_shortage", "description": "Granül bitti"},
        headers=worker,
    )
    assert reported.status_code in (200, 201), reported.text
    issue = reported.json()
    has_original_fields(issue, ISSUE_FIELDS)
    assert (issue["work_order_stage_id"], issue["created_by"]) == (first["id"], worker_id)
    assert (issue["type"], issue["description"]) == ("material_shortage", "Granül bitti")

    done = await app.client.post(f"/stages/{first['id']}/done", headers=worker)  # no body: quantities not reported
    assert done.status_code == 200, done.text
    has_original_fields(done.json(), STAGE_FIELDS)
    assert done.json()["status"] == "done"
    assert done.json()["actual_end"] is not None
    assert datetime.fromisoformat(done.json()["actual_end"]) >= datetime.fromisoformat(done.json()["actual_start"])

    again = (await app.client.get(f"/workorders/{work_order['id']}/stages", headers=worker)).json()
    assert {stage["status"] for stage in again} <= ORIGINAL_STATUSES
    assert [stage["status"] for stage in again] == ["done"]


async def test_the_original_login_answers_the_json_form_too(app: Api) -> None:
    await app.create_user("mehmet", Role.WORKER)
    response = await app.client.post("/auth/login", json={"username": "mehmet", "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json()["token_type"].lower() == "bearer"


async def test_a_naive_time_is_read_in_the_plant_zone_on_every_write(app: Api) -> None:
    planner = await app.actor(Role.PLANNER)
    created = await create_work_order(app, planner)
    moved = await app.client.patch(
        f"/workorders/{created['id']}", json={"planned_end": "2026-12-03T18:00:00"}, headers=planner
    )
    assert moved.status_code == 200, moved.text
    assert local(moved.json()["planned_end"]) == datetime(2026, 12, 3, 18, 0, tzinfo=PLANT)
    # The same instant written with an offset is the same time.
    utc = datetime(2026, 12, 3, 18, 30, tzinfo=PLANT).astimezone(ZoneInfo("UTC"))
    shifted = await app.client.patch(
        f"/workorders/{created['id']}", json={"planned_end": utc.isoformat()}, headers=planner
    )
    assert shifted.status_code == 200, shifted.text
    assert local(shifted.json()["planned_end"]) == datetime(2026, 12, 3, 18, 30, tzinfo=PLANT)


@pytest.mark.parametrize("role", ["admin", "planner", "supervisor"])
async def test_registering_with_another_role_than_worker_is_refused(app: Api, role: str) -> None:
    response = await app.client.post(
        "/auth/register", json={"username": f"x-{role}", "password": "long-enough-password", "role": role}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "role" in response.text
