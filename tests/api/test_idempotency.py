"""`Idempotency-Key`: a retried action acts once and gets the first answer; a reused key with another request is
refused; keys belong to their user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from api.idempotency import fingerprint
from core.models import IdempotencyRecord, Role, StageEvent
from tests.support.api import Api
from tests.support.tracking import assign, create_work_order

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


async def started_stage(api: Api) -> tuple[int, dict[str, str], int]:
    """A stage of a new work order assigned to a new worker: (stage id, the worker's headers, the worker's id)."""
    api.set_now(NOW)
    planner = await api.actor(Role.PLANNER)
    worker_id, worker = await api.signed_in(Role.WORKER)
    order = await create_work_order(api, planner)
    stage_id = order["stages"][0]["id"]
    await assign(api, planner, stage_id, worker_id)
    return stage_id, worker, worker_id


async def events_of(api: Api, stage_id: int) -> int:
    async with api.session() as session:
        return int(
            await session.scalar(select(func.count()).select_from(StageEvent).where(StageEvent.stage_id == stage_id))
            or 0
        )


async def test_a_retried_start_acts_once_and_answers_the_same(api: Api) -> None:
    stage_id, worker, _ = await started_stage(api)
    headers = worker | {"Idempotency-Key": "tablet-7f3a-1"}
    first = await api.client.post(f"/stages/{stage_id}/start", headers=headers)
    api.set_now(NOW + timedelta(seconds=30))  # the retry comes later: it must not look like a new action
    again = await api.client.post(f"/stages/{stage_id}/start", headers=headers)
    assert first.status_code == 200, first.text
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["idempotency-replayed"] == "true"
    assert "idempotency-replayed" not in first.headers
    assert await events_of(api, stage_id) == 1
    # Without the key the same request is a new action (and the state machine refuses a second start).
    plain = await api.client.post(f"/stages/{stage_id}/start", headers=worker)
    assert plain.status_code == 409


async def test_a_retried_done_with_a_body_acts_once(api: Api) -> None:
    stage_id, worker, _ = await started_stage(api)
    await api.client.post(f"/stages/{stage_id}/start", headers=worker)
    headers = worker | {"Idempotency-Key": "done-1"}
    body = {"good_qty": 9, "scrap_qty": 1}
    first = await api.client.post(f"/stages/{stage_id}/done", json=body, headers=headers)
    again = await api.client.post(f"/stages/{stage_id}/done", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert again.content == first.content
    assert await events_of(api, stage_id) == 2  # start and one done


async def test_a_key_reused_for_another_request_is_refused(api: Api) -> None:
    stage_id, worker, _ = await started_stage(api)
    await api.client.post(f"/stages/{stage_id}/start", headers=worker)
    headers = worker | {"Idempotency-Key": "done-2"}
    await api.client.post(f"/stages/{stage_id}/done", json={"good_qty": 9, "scrap_qty": 1}, headers=headers)
    other = await api.client.post(f"/stages/{stage_id}/done", json={"good_qty": 10, "scrap_qty": 0}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    elsewhere = await api.client.post(f"/stages/{stage_id}/pause", headers=headers)
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (422, "idempotency_key_reused")


async def test_keys_belong_to_their_user(api: Api) -> None:
    stage_id, worker, _ = await started_stage(api)
    planner = await api.actor(Role.PLANNER)
    key = {"Idempotency-Key": "shared-key"}
    mine = await api.client.post(f"/stages/{stage_id}/start", headers=worker | key)
    # Another user's request with the same key is a request of its own: it runs (and is refused by the state machine),
    # and never sees the worker's stored answer.
    theirs = await api.client.post(f"/stages/{stage_id}/start", headers=planner | key)
    assert mine.status_code == 200
    assert theirs.status_code == 409
    assert "idempotency-replayed" not in theirs.headers


async def test_a_server_error_is_not_stored_and_a_bad_key_is_refused(api: Api) -> None:
    stage_id, worker, _ = await started_stage(api)
    too_long = await api.client.post(f"/stages/{stage_id}/start", headers=worker | {"Idempotency-Key": "k" * 256})
    assert (too_long.status_code, too_long.json()["code"]) == (422, "invalid_idempotency_key")
    refused = await api.client.post(f"/stages/{stage_id}/done", headers=worker | {"Idempotency-Key": "early-done"})
    assert refused.status_code == 409  # not started yet: a 4xx answer is stored like any other
    async with api.session() as session:
        stored = (await session.scalars(select(IdempotencyRecord))).all()
    assert [(row.key, row.status_code) for row in stored] == [("early-done", 409)]


async def test_without_a_valid_token_the_key_changes_nothing(api: Api) -> None:
    stage_id, _, _ = await started_stage(api)
    answer = await api.client.post(f"/stages/{stage_id}/start", headers={"Idempotency-Key": "anon"})
    assert answer.status_code == 401
    async with api.session() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


async def test_a_key_left_pending_by_a_dead_request_frees_itself(api: Api) -> None:
    stage_id, worker, worker_id = await started_stage(api)
    async with api.session() as session:
        session.add(
            IdempotencyRecord(
                user_id=worker_id, key="orphan", method="POST", path=f"/stages/{stage_id}/start",
                request_sha256=fingerprint({"method": "POST", "path": f"/stages/{stage_id}/start"}, b""),
                status_code=0, content_type=None, body=b"", created_at=NOW,
            )
        )  # fmt: skip
    busy = await api.client.post(f"/stages/{stage_id}/start", headers=worker | {"Idempotency-Key": "orphan"})
    assert (busy.status_code, busy.json()["code"]) == (409, "idempotency_key_in_progress")
    assert busy.headers["retry-after"] == "1"
    api.set_now(NOW + timedelta(minutes=5))
    freed = await api.client.post(f"/stages/{stage_id}/start", headers=worker | {"Idempotency-Key": "orphan"})
    assert freed.status_code == 200, freed.text
