"""The metrics summary of a planning window: work orders by status, on-time share, average delay per stage."""

from __future__ import annotations

from typing import Any

from httpx import Response

from core.models import Role
from tests.support.api import Api, Headers
from tests.support.tracking import create_work_order, drive, hours, problem_fields, when

DAY = {"from": "2026-03-10T00:00:00Z", "to": "2026-03-11T00:00:00Z"}


async def summary_day(api: Api) -> dict[str, Any]:
    """Six work orders and the summary of 2026-03-10 (planned_start in [00:00, next 00:00))."""
    _, planner = await api.signed_in(Role.PLANNER, "plan-p")
    # A 08:00-12:00: Enjeksiyon (plan end 08:30) 08:05-08:40 → +10; Montaj (plan end 12:00) 08:45-12:00 → 0; on time
    a = await create_work_order(api, planner)
    await drive(api, planner, a, (1 / 12, 2 / 3), (0.75, 4))
    # B 09:00-11:00: Enjeksiyon (plan end 09:30) 09:00-09:20 → -10; Montaj (plan end 11:00) 09:25-11:30 → +30; late
    b = await create_work_order(api, planner, planned_start=hours(1), planned_end=hours(3))
    await drive(api, planner, b, (1, 4 / 3), (17 / 12, 3.5))
    # C 10:00-14:00: Enjeksiyon (plan end 10:30) 10:00-10:50 → +20; Montaj running: in progress
    c = await create_work_order(api, planner, planned_start=hours(2), planned_end=hours(6))
    await drive(api, planner, c, (2, 17 / 6), (3, None))
    # D starts at 00:00 (the window's first instant, included) and is untouched: planned
    await create_work_order(api, planner, planned_start=hours(-8), planned_end=hours(-6))
    # E cancelled before anything started
    e = await create_work_order(api, planner, planned_start=hours(6), planned_end=hours(8))
    assert (await api.client.post(f"/workorders/{e['id']}/cancel", headers=planner)).status_code == 200
    # F starts at the next 00:00 (excluded) and ends late: it must not count anywhere
    f = await create_work_order(api, planner, planned_start=hours(16), planned_end=hours(18))
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
    _, planner = await api.signed_in(Role.PLANNER, "plan-q")
    _, admin = await api.signed_in(Role.ADMIN, "boss")
    _, worker = await api.signed_in(Role.WORKER, "selim")

    async def summary(headers: Headers, **params: str) -> Response:
        return await api.client.get("/metrics/summary", params=params, headers=headers)

    empty = (await summary(admin, **DAY)).json()
    assert (empty["work_orders"], empty["on_time_percent"], empty["avg_delay_min_by_stage"]) == (0, None, {})
    assert set(empty["by_status"].values()) == {0}
    assert (await summary(worker, **DAY)).status_code == 403
    assert problem_fields(await summary(planner, **{"from": DAY["to"], "to": DAY["from"]})) == ["from"]
    assert problem_fields(await summary(planner, **{"from": DAY["from"], "to": DAY["from"]})) == ["from"]
    assert problem_fields(await summary(planner, to=DAY["to"])) == ["from"]
