"""DELETE /machines/{id}: an admin archives a machine, keeping its readings or deleting them when confirmed."""

from __future__ import annotations

from sqlalchemy import func, select

from core.models import MachineLatest, Reading, Role
from tests.api.test_machines import register_machine, samples
from tests.support.api import Api


async def count(api: Api, entity: type) -> int:
    async with api.session() as session:
        return int(await session.scalar(select(func.count()).select_from(entity)) or 0)


async def test_archiving_keeps_the_history_and_stops_the_machine(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    other = await register_machine(api, admin, code="press-4")
    key = (await api.client.post(f"/machines/{press['id']}/api-keys", headers=admin)).json()["key"]
    posted = await api.client.post(f"/machines/{press['id']}/readings", content=samples(5), headers={"X-API-Key": key})
    assert posted.status_code == 200, posted.text

    archived = await api.client.delete(f"/machines/{press['id']}", headers=admin)
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived_at"] is not None
    assert (await count(api, Reading), await count(api, MachineLatest)) == (10, 2)
    listed = (await api.client.get("/machines", headers=admin)).json()
    assert [machine["id"] for machine in listed] == [other["id"]]
    gone = (await api.client.get("/machines", params={"archived": "true"}, headers=admin)).json()
    assert [machine["id"] for machine in gone] == [press["id"]]
    # Its key is revoked with it: the device can no longer post.
    refused = await api.client.post(f"/machines/{press['id']}/readings", content=samples(1), headers={"X-API-Key": key})
    assert refused.status_code == 401, refused.text


async def test_deleting_the_readings_needs_the_machine_code_as_confirmation(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    press = await register_machine(api, admin)
    key = (await api.client.post(f"/machines/{press['id']}/api-keys", headers=admin)).json()["key"]
    await api.client.post(f"/machines/{press['id']}/readings", content=samples(5), headers={"X-API-Key": key})
    url = f"/machines/{press['id']}"
    for params in ({"readings": "delete"}, {"readings": "delete", "confirm": "press-4"}):
        unconfirmed = await api.client.delete(url, params=params, headers=admin)
        assert unconfirmed.status_code == 422, unconfirmed.text
        assert [error["field"] for error in unconfirmed.json()["errors"]] == ["confirm"]
    assert await count(api, Reading) == 10
    assert (await api.client.get(url, headers=admin)).json()["archived_at"] is None

    deleted = await api.client.delete(url, params={"readings": "delete", "confirm": "press-3"}, headers=admin)
    assert deleted.status_code == 200, deleted.text
    assert (await count(api, Reading), await count(api, MachineLatest)) == (0, 0)
    assert deleted.json()["archived_at"] is not None
