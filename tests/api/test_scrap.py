"""Scrap with reasons: on done, and as interim counts during a long stage; totals that agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.models import Role
from tests.support.api import Api, Headers
from tests.support.tracking import assign, create_work_order

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


async def running_stage(api: Api) -> tuple[int, Headers]:
    """A started stage of a new work order, and its assigned worker's headers."""
    api.set_now(NOW)
    planner = await api.actor(Role.PLANNER)
    worker_id, worker = await api.signed_in(Role.WORKER)
    order = await create_work_order(api, planner)
    stage_id = order["stages"][0]["id"]
    await assign(api, planner, stage_id, worker_id)
    started = await api.client.post(f"/stages/{stage_id}/start", headers=worker)
    assert started.status_code == 200, started.text
    return stage_id, worker


async def test_done_with_scrap_by_reason(api: Api) -> None:
    stage_id, worker = await running_stage(api)
    api.set_now(NOW + timedelta(hours=1))
    body = {"good_qty": 95, "scrap": [{"reason": "flash", "qty": 3}, {"reason": "short_shot", "qty": 2}]}
    done = await api.client.post(f"/stages/{stage_id}/done", json=body, headers=worker)
    assert done.status_code == 200, done.text
    stage = done.json()
    assert (stage["good_qty"], stage["scrap_qty"]) == (95, 5)
    assert stage["scrap_by_reason"] == {"flash": 3, "short_shot": 2}


async def test_interim_counts_add_up_and_done_keeps_them(api: Api) -> None:
    stage_id, worker = await running_stage(api)
    first = await api.client.post(
        f"/stages/{stage_id}/counts", json={"good_qty": 50, "scrap": [{"reason": "flash", "qty": 2}]}, headers=worker
    )
    second = await api.client.post(
        f"/stages/{stage_id}/counts",
        json={"good_qty": 30, "scrap": [{"reason": "short_shot", "qty": 1}, {"reason": "flash", "qty": 1}]},
        headers=worker,
    )
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert (second.json()["good_qty"], second.json()["scrap_qty"]) == (80, 4)
    done = await api.client.post(f"/stages/{stage_id}/done", headers=worker)  # no body: the counts stand
    assert (done.json()["good_qty"], done.json()["scrap_qty"]) == (80, 4)
    assert done.json()["scrap_by_reason"] == {"flash": 3, "short_shot": 1}
    late = await api.client.post(f"/stages/{stage_id}/counts", json={"good_qty": 1}, headers=worker)
    assert (late.status_code, late.json()["code"]) == (409, "stage_not_running")


async def test_scrap_totals_must_agree(api: Api) -> None:
    stage_id, worker = await running_stage(api)
    await api.client.post(f"/stages/{stage_id}/counts", json={"scrap": [{"reason": "flash", "qty": 2}]}, headers=worker)
    body = {"scrap_qty": 4, "scrap": [{"reason": "short_shot", "qty": 1}]}  # 2 earlier + 1 now is 3, not 4
    refused = await api.client.post(f"/stages/{stage_id}/done", json=body, headers=worker)
    assert (refused.status_code, refused.json()["code"]) == (422, "scrap_mismatch")
    body["scrap_qty"] = 3
    accepted = await api.client.post(f"/stages/{stage_id}/done", json=body, headers=worker)
    assert accepted.status_code == 200, accepted.text


async def test_only_scrap_reasons_are_taken(api: Api) -> None:
    stage_id, worker = await running_stage(api)
    for reason in ("breakdown", "no_such_reason"):
        refused = await api.client.post(
            f"/stages/{stage_id}/counts", json={"scrap": [{"reason": reason, "qty": 1}]}, headers=worker
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "unknown_scrap_reason")
    zero = await api.client.post(
        f"/stages/{stage_id}/counts", json={"scrap": [{"reason": "flash", "qty": 0}]}, headers=worker
    )
    assert zero.status_code == 422


async def test_counts_of_a_stage_not_assigned_to_the_worker_are_a_404(api: Api) -> None:
    stage_id, _ = await running_stage(api)
    stranger = await api.actor(Role.WORKER)
    answer = await api.client.post(f"/stages/{stage_id}/counts", json={"good_qty": 5}, headers=stranger)
    assert answer.status_code == 404


async def test_a_retried_count_with_its_key_counts_once(api: Api) -> None:
    stage_id, worker = await running_stage(api)
    headers = worker | {"Idempotency-Key": "count-1"}
    for _ in range(2):
        answer = await api.client.post(f"/stages/{stage_id}/counts", json={"good_qty": 10}, headers=headers)
        assert answer.status_code == 200
    stage = (await api.client.get(f"/stages/{stage_id}", headers=worker)).json()
    assert stage["good_qty"] == 10
