"""Quality over HTTP: a machine's tag ranges in the registry, values outside them stored bad (kept, counted), and
posted quality stored as sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from core.models import Role
from tests.support.api import Api

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_a_value_outside_its_registered_range_is_stored_bad_and_counted(api: Api) -> None:
    api.set_now(NOW)
    admin = await api.actor(Role.ADMIN)
    press = (await api.client.post("/machines", json={"site": "plant1", "code": "press-r", "name": "Pres R"},
                                   headers=admin)).json()  # fmt: skip
    url = f"/machines/{press['id']}"
    assert (await api.client.put(f"{url}/tag-ranges/temp", json={"low": -20, "high": 400}, headers=admin)).json() == {
        "tag": "temp",
        "low": -20.0,
        "high": 400.0,
    }
    backwards = await api.client.put(f"{url}/tag-ranges/temp", json={"low": 5, "high": 1}, headers=admin)
    assert (backwards.status_code, backwards.json()["code"]) == (422, "invalid_range")
    # Before the range, 1e300 was stored as a plain good value; now it is kept, but bad.
    body = {
        "samples": [
            {"ts": z(NOW - timedelta(seconds=3)), "values": {"temp": 212.5}},
            {"ts": z(NOW - timedelta(seconds=2)), "values": {"temp": 1e300}},
            {"ts": z(NOW - timedelta(seconds=1)), "values": {"temp": 5.0, "speed": None},
             "quality": {"temp": "uncertain", "speed": {"level": "bad", "code": 2, "detail": "IllegalDataAddress"}}},
        ]
    }  # fmt: skip
    posted = await api.client.post(f"{url}/readings", content=orjson.dumps(body), headers=admin)
    assert posted.status_code == 200, posted.text
    assert {key: posted.json()[key] for key in ("readings_inserted", "out_of_range", "not_good", "conflicts")} == {
        "readings_inserted": 4,
        "out_of_range": 1,
        "not_good": 3,
        "conflicts": 0,
    }
    window = {"tags": "temp,speed", "from": z(NOW - timedelta(minutes=1)), "to": z(NOW), "bucket": "raw"}
    series = {
        s["tag"]: s["points"]
        for s in (await api.client.get(f"{url}/readings", params=window, headers=admin)).json()["series"]
    }
    assert series["temp"] == [
        {"t": z(NOW - timedelta(seconds=3)), "value": 212.5},
        {"t": z(NOW - timedelta(seconds=2)), "value": 1e300, "quality": "bad"},
        {"t": z(NOW - timedelta(seconds=1)), "value": 5.0, "quality": "uncertain"},
    ]
    assert series["speed"] == [{"t": z(NOW - timedelta(seconds=1)), "value": None, "quality": "bad"}]
    latest = (await api.client.get(f"{url}/latest", headers=admin)).json()["values"]
    assert [(v["tag"], v["value"], v["quality"]) for v in latest] == [
        ("speed", None, "bad"),
        ("temp", 5.0, "uncertain"),
    ]
    worker = await api.actor(Role.WORKER)
    assert [row["tag"] for row in (await api.client.get(f"{url}/tag-ranges", headers=worker)).json()] == ["temp"]
    assert (await api.client.delete(f"{url}/tag-ranges/temp", headers=admin)).status_code == 204
    gone = await api.client.delete(f"{url}/tag-ranges/temp", headers=admin)
    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
