"""Loss reasons a plant edits, and the stops of a machine that reports no state, found from its cycle counter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from core.models import Role
from tests.support.api import Api, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import add_readings, make_machine

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def app(database: Database) -> AsyncIterator[Api]:
    async with running_api(database, make_settings(database.url)) as api:
        api.set_now(at(120))
        yield api


async def test_an_admin_relabels_and_retires_a_reason_and_history_keeps_it(app: Api) -> None:
    admin, worker = await app.actor(Role.ADMIN), await app.actor(Role.WORKER)
    renamed = await app.client.patch("/loss-reasons/flash", json={"label_en": "Flash / burr"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["label_en"], renamed.json()["label_tr"], renamed.json()["category"]) == (
        "Flash / burr",
        "Çapak",
        "quality",
    )
    retired = await app.client.patch("/loss-reasons/waiting_operator", json={"active": False}, headers=admin)
    assert retired.json()["active"] is False
    offered = [row["code"] for row in (await app.client.get("/loss-reasons", headers=worker)).json()]
    assert "waiting_operator" not in offered
    assert "flash" in offered
    everything = await app.client.get("/loss-reasons", params={"include_inactive": True}, headers=worker)
    assert "waiting_operator" in [row["code"] for row in everything.json()]
    # Code and category are what past losses were booked as: they do not change.
    moved = await app.client.patch("/loss-reasons/flash", json={"category": "availability"}, headers=admin)
    assert moved.status_code == 422
    missing = await app.client.patch("/loss-reasons/nope", json={"active": False}, headers=admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    planner = await app.actor(Role.PLANNER)
    refused = await app.client.patch("/loss-reasons/flash", json={"active": False}, headers=planner)
    assert refused.status_code == 403


async def test_a_retired_reason_is_refused_for_new_stops_and_kept_on_old_ones(app: Api) -> None:
    admin = await app.actor(Role.ADMIN)
    machine_id = (await app.add(make_machine, "press-counter", ideal_cycle_time_s=60.0)).id
    # Read every minute: a part a minute from 06:00 to 06:10, the counter standing at 10 until 06:40, then a part a
    # minute again until 07:00.
    rows = [("cycle_count", at(minute), float(min(minute, 10) + max(minute - 39, 0))) for minute in range(61)]
    await app.add(add_readings, machine_id, rows)
    url = f"/machines/{machine_id}/downtimes"
    window = {"from": at(0).isoformat(), "to": at(60).isoformat()}
    found = await app.client.get(url, params=window, headers=admin)
    assert found.status_code == 200, found.text
    # The next part was due at 06:11; the counter rose again at 06:40: a 29-minute idle stop, from the counter alone.
    [event] = found.json()["events"]
    assert (event["start"], event["end"], event["states"]) == (
        at(11).isoformat().replace("+00:00", "Z"),
        at(40).isoformat().replace("+00:00", "Z"),
        ["idle"],
    )
    classified = await app.client.post(
        f"{url}/classify", json={"start": event["start"], "reason_code": "waiting_operator"}, headers=admin
    )
    assert classified.status_code == 200, classified.text
    await app.client.patch("/loss-reasons/waiting_operator", json={"active": False}, headers=admin)
    again = await app.client.post(
        f"{url}/classify", json={"start": event["start"], "reason_code": "waiting_operator"}, headers=admin
    )
    assert (again.status_code, again.json()["code"]) == (422, "unknown_reason")
    kept = (await app.client.get(url, params=window, headers=admin)).json()["events"]
    assert [(row["reason_code"], row["category"]) for row in kept] == [("waiting_operator", "availability")]


async def test_oee_of_a_machine_without_a_state_tag_comes_from_its_counter(app: Api) -> None:
    planner = await app.actor(Role.PLANNER)
    machine_id = (await app.add(make_machine, "assembly-counter", ideal_cycle_time_s=60.0)).id
    # Read every 20 s; a part a minute 06:00-07:00 but for a stall: the part due at 06:21 comes at 06:30 (a 9-minute
    # stop), and one hiccup: the part due at 06:45 comes at 06:46:40 (a 100-second minor stop).
    rises = [*range(0, 21), *range(30, 45), 46 + 40 / 60, *range(47, 60)]
    reads = sorted({*(minute / 3 for minute in range(180)), *rises})
    rows = []
    for read in reads:
        count = float(sum(1 for rise in rises if rise <= read) - 1)
        rows += [("cycle_count", at(read), count), ("good_count", at(read), count)]
    await app.add(add_readings, machine_id, rows)
    response = await app.client.get(
        "/oee",
        params={"machine_id": machine_id, "group_by": "day", "from": at(0).isoformat(), "to": at(60).isoformat()},
        headers=planner,
    )
    assert response.status_code == 200, response.text
    total = response.json()["total"]
    # Planned (no calendar): 60 min. Stop 06:21-06:30 (9 min, unclassified); the minor stop 06:45-06:46:40 is a
    # performance loss, so it stays in run time.
    assert total["run_min"] == 60 - 9
    assert (total["unclassified_min"], total["minor_stops"]) == (9.0, 1)
    assert total["minor_stop_min"] == pytest.approx(100 / 60, abs=0.001)
    assert total["total_count"] == len(rises) - 1
    assert total["availability"] == pytest.approx(51 / 60)
