"""Production tracking driven through the API as planners and workers do it: work orders, assignments, stage
actions, issues, lists. Times are hours from T0 on the app's clock (`Api.set_now`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import Response

from tests.support.api import Api, Headers, total_of

T0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
# A work order planned 08:00-12:00; the API gives it the default stages (Enjeksiyon 08:00-08:30, Montaj to 12:00).
PLAN: dict[str, Any] = {
    "product_code": "P-100",
    "lot_no": "L-1",
    "qty": 100,
    "planned_start": T0,
    "planned_end": T0 + timedelta(hours=4),
}


def hours(value: float) -> datetime:
    """T0 plus some hours."""
    return T0 + timedelta(hours=value)


def when(value: str) -> datetime:
    """A timestamp from a response."""
    return datetime.fromisoformat(value)


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as ISO 8601 strings, everything else as it is."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in values.items()}


def stage_plan(name: str, start: datetime, end: datetime) -> dict[str, str]:
    """A stage as the API takes it."""
    return {"stage_name": name, "planned_start": start.isoformat(), "planned_end": end.isoformat()}


def problem_fields(response: Response) -> list[str]:
    """The field names of a 422 problem."""
    assert response.status_code == 422, response.text
    return [error["field"] for error in response.json()["errors"]]


async def create_work_order(api: Api, headers: Headers, **fields: Any) -> dict[str, Any]:
    """POST a work order (PLAN, with `fields` replacing or adding fields), expecting success; the created one."""
    response = await api.client.post("/workorders", json=jsonable(PLAN | fields), headers=headers)
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


async def report_issue(api: Api, headers: Headers, stage_id: int, kind: str = "quality") -> dict[str, Any]:
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
    return [item["id"] for item in response.json()], total_of(response)
