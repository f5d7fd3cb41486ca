"""The machine registry, machine API keys, and HTTP ingestion through the shared write path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select

from core.contract import MachineState
from core.models import Gateway, Reading, Role, StageStatus
from tests.support.api import Api, Headers, total_of
from tests.support.factories import add_states, make_machine, make_work_order


async def register_machine(api: Api, headers: Headers, **overrides: Any) -> dict[str, Any]:
    """POST a machine (press-3 of plant1 unless `overrides` say otherwise), expecting success; the registered one."""
    body = {"site": "plant1", "code": "press-3", "name": "Enjeksiyon presi 3", "ideal_cycle_time_s": 12.5} | overrides
    response = await api.client.post("/machines", json=body, headers=headers)
    assert response.status_code == 201, response.text
    machine: dict[str, Any] = response.json()
    return machine


def samples(count: int, start: datetime | None = None) -> bytes:
    base = start or datetime.now(UTC) - timedelta(minutes=10)
    return orjson.dumps(
        {
            "seq": 1,
            "samples": [
                {"ts": (base + timedelta(seconds=i)).isoformat(), "values": {"temp": 200.0 + i, "door": i % 2 == 0}}
                for i in range(count)
            ],
        }
    )


async def stored(api: Api) -> int:
    async with api.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Reading)) or 0)


async def test_admin_registers_lists_and_edits_machines(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    worker = await api.actor(Role.WORKER)
    press = await register_machine(api, admin, machine_type="injection", location="Hall A")
    assert (press["site"], press["code"], press["auto_registered"], press["online"]) == (
        "plant1",
        "press-3",
        False,
        None,
    )
    await register_machine(api, admin, site="plant2", code="press-3", name="Other site, same code")
    duplicate = await api.client.post(
        "/machines", json={"site": "plant1", "code": "press-3", "name": "x"}, headers=admin
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "machine_exists"

    listed = await api.client.get("/machines", params={"site": "plant1"}, headers=worker)
    assert [m["code"] for m in listed.json()] == ["press-3"]
    assert total_of(listed) == 1
    patched = await api.client.patch(
        f"/machines/{press['id']}", json={"location": "Hall B", "ideal_cycle_time_s": 11}, headers=admin
    )
    assert (patched.json()["location"], patched.json()["ideal_cycle_time_s"]) == ("Hall B", 11.0)
    assert (await api.client.get(f"/machines/{press['id']}", headers=worker)).json()["location"] == "Hall B"


async def test_bad_machines_are_422(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    for body, field in (
        ({"site": "Plant 1", "code": "m", "name": "x"}, "site"),
        ({"site": "p", "code": "a/b", "name": "x"}, "code"),
        ({"site": "p", "code": "m", "name": ""}, "name"),
        ({"site": "p", "code": "m", "name": "x", "ideal_cycle_time_s": 0}, "ideal_cycle_time_s"),
    ):
        response = await api.client.post("/machines", json=body, headers=admin)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field
    press = await register_machine(api, admin)
    response = await api.client.patch(f"/machines/{press['id']}", json={"site": "elsewhere"}, headers=admin)
    assert response.status_code == 422


async def test_a_machine_posts_readings_with_its_own_key(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    created = await api.client.post(f"/machines/{press['id']}/api-keys", headers=admin)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("sfk_")
    assert created.json()["prefix"] == key[:12]

    payload = samples(5)
    first = await api.client.post(
        f"/machines/{press['id']}/readings",
        content=payload,
        headers={"X-API-Key": key, "content-type": "application/json"},
    )
    assert first.status_code == 200, first.text
    assert first.json() == {
        "readings_offered": 10,
        "readings_inserted": 10,
        "duplicates": 0,
        "states_inserted": 0,
        "conflicts": 0,
        "not_good": 0,
        "out_of_range": 0,
    }
    again = await api.client.post(f"/machines/{press['id']}/readings", content=payload, headers={"X-API-Key": key})
    assert again.json()["duplicates"] == 10
    assert await stored(api) == 10
    listed = (await api.client.get(f"/machines/{press['id']}/api-keys", headers=admin)).json()
    assert [k["prefix"] for k in listed] == [key[:12]]
    assert "key" not in listed[0]
    assert "key_hash" not in listed[0]


async def test_keys_rotate_revoke_and_belong_to_one_machine(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    other = await register_machine(api, admin, code="press-4")
    old = (await api.client.post(f"/machines/{press['id']}/api-keys", headers=admin)).json()
    new = (await api.client.post(f"/machines/{press['id']}/api-keys", headers=admin)).json()
    url = f"/machines/{press['id']}/readings"
    assert (await api.client.post(url, content=samples(1), headers={"X-API-Key": old["key"]})).status_code == 401
    assert (await api.client.post(url, content=samples(1), headers={"X-API-Key": new["key"]})).status_code == 200
    wrong_machine = await api.client.post(
        f"/machines/{other['id']}/readings", content=samples(1), headers={"X-API-Key": new["key"]}
    )
    assert wrong_machine.status_code == 401
    kept = await api.client.post(f"/machines/{press['id']}/api-keys", json={"revoke_others": False}, headers=admin)
    assert (await api.client.post(url, content=samples(2), headers={"X-API-Key": new["key"]})).status_code == 200
    revoked = await api.client.delete(f"/machines/{press['id']}/api-keys/{new['id']}", headers=admin)
    assert revoked.status_code == 204
    assert (await api.client.post(url, content=samples(3), headers={"X-API-Key": new["key"]})).status_code == 401
    assert (
        await api.client.post(url, content=samples(3), headers={"X-API-Key": kept.json()["key"]})
    ).status_code == 200
    assert (await api.client.post(url, content=samples(1), headers={"X-API-Key": "sfk_guess"})).status_code == 401


async def test_planners_may_post_readings_workers_may_not(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    planner = await api.actor(Role.PLANNER)
    worker = await api.actor(Role.WORKER)
    url = f"/machines/{press['id']}/readings"
    assert (await api.client.post(url, content=samples(2), headers=planner)).status_code == 200
    refused = await api.client.post(url, content=samples(2), headers=worker)
    assert refused.status_code == 403
    assert (await api.client.post(url, content=samples(2))).status_code == 401
    assert await stored(api) == 4


async def test_bad_readings_are_422_with_the_reason_and_store_nothing(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    url = f"/machines/{press['id']}/readings"
    for payload, reason in (
        (b"{", "not JSON"),
        (b'{"ts": "2026-11-26T08:00:00", "values": {"a": 1}}', "timezone"),
        (b'{"ts": "2001-01-01T00:00:00Z", "values": {"a": 1}}', "outside the accepted window"),
        (orjson.dumps({"ts": datetime.now(UTC).isoformat(), "values": {"a": "text"}}), "text is allowed only"),
    ):
        response = await api.client.post(url, content=payload, headers=admin)
        assert response.status_code == 422, response.text
        assert reason in response.json()["detail"]
    too_large = await api.client.post(url, content=b" " * (256 * 1024 + 1), headers=admin)
    assert (too_large.status_code, too_large.json()["code"]) == (413, "payload_too_large")
    assert (await api.client.post("/machines/999999/readings", content=samples(1), headers=admin)).status_code == 404
    assert await stored(api) == 0


async def test_posted_states_and_latest_values(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    now = datetime.now(UTC)
    body = {
        "samples": [
            {"ts": (now - timedelta(seconds=20)).isoformat(), "values": {"state": "running", "temp": 1}},
            {"ts": (now - timedelta(seconds=10)).isoformat(), "values": {"state": "alarm", "temp": 2}},
        ]
    }
    response = await api.client.post(f"/machines/{press['id']}/readings", json=body, headers=admin)
    assert response.json()["states_inserted"] == 2
    machine = (await api.client.get(f"/machines/{press['id']}", headers=admin)).json()
    assert machine["last_seen_at"] is not None


async def test_the_machine_list_says_what_each_machine_is_doing(api: Api) -> None:
    """The operator's list in one request: current state, since when, and the stage running on each machine
    (for a worker only their own stage)."""
    press = await api.add(make_machine, "press-now")
    idle = await api.add(make_machine, "idle-now")
    await api.add(make_machine, "quiet-now")
    since = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    await api.add(
        add_states, press.id, [(since - timedelta(hours=1), MachineState.IDLE), (since, MachineState.RUNNING)]
    )
    await api.add(add_states, idle.id, [(since, MachineState.IDLE)])
    order = await api.add(
        make_work_order, start=since, stages=[StageStatus.DONE, StageStatus.IN_PROGRESS], machine_id=press.id
    )
    planner = await api.actor(Role.PLANNER)
    rows = {row["code"]: row for row in (await api.client.get("/machines", headers=planner)).json()}
    assert (rows["press-now"]["state"], rows["press-now"]["running_stage_id"]) == ("running", order.stages[1].id)
    assert datetime.fromisoformat(rows["press-now"]["state_since"]) == since
    assert (rows["idle-now"]["state"], rows["idle-now"]["running_stage_id"]) == ("idle", None)
    assert (rows["quiet-now"]["state"], rows["quiet-now"]["state_since"]) == (None, None)
    one = (await api.client.get(f"/machines/{press.id}", headers=planner)).json()
    assert one["running_stage_id"] == order.stages[1].id
    worker = await api.actor(Role.WORKER)
    seen_by_worker = (await api.client.get(f"/machines/{press.id}", headers=worker)).json()
    assert (seen_by_worker["state"], seen_by_worker["running_stage_id"]) == ("running", None)  # not their stage


async def test_gateways_show_their_backlog(api: Api) -> None:
    async with api.session() as session:
        session.add(
            Gateway(
                site="plant1",
                gateway_id="gw-hall-b",
                online=False,
                status_at=datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
                backlog_messages=120,
                backlog_readings=24000,
                backlog_oldest_age_s=600.5,
                backlog_bytes=1 << 20,
                backlog_max_bytes=1 << 30,
                backlog_seconds_to_full=36000.0,
            )
        )
    answer = await api.client.get("/gateways", headers=await api.actor(Role.WORKER))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-total-count"] == "1"
    assert answer.json() == [
        {
            "site": "plant1",
            "gateway_id": "gw-hall-b",
            "online": False,
            "status_at": "2026-11-26T08:00:00Z",
            "backlog_messages": 120,
            "backlog_readings": 24000,
            "backlog_oldest_age_s": 600.5,
            "backlog_bytes": 1048576,
            "backlog_max_bytes": 1073741824,
            "backlog_seconds_to_full": 36000.0,
        }
    ]
