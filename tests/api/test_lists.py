"""Lists: JSON arrays paged by `limit` / `offset`, their size in `X-Total-Count`, other pages in `Link`."""

from __future__ import annotations

from typing import Any

from httpx import Response

from core.models import Role
from tests.support.api import Api, Headers, make_settings, running_api, total_of
from tests.support.factories import make_machine
from tests.support.tracking import create_work_order, report_issue


def links(response: Response) -> dict[str, str]:
    """The `Link` header's targets by relation."""
    return {rel: link["url"] for rel, link in response.links.items() if rel is not None}


async def machines_of_plant1(api: Api) -> list[int]:
    """Five machines of plant1 and one of plant2; the ids of plant1's, in the list's order (by name)."""
    ids = [(await api.add(make_machine, f"press-{number}", name=f"Press {number}")).id for number in range(5)]
    await api.add(make_machine, "press-9", site="plant2")
    return ids


async def test_pages_are_arrays_with_the_total_and_links_to_their_neighbours(api: Api) -> None:
    worker = await api.actor(Role.WORKER)
    ids = await machines_of_plant1(api)

    first = await api.client.get("/machines", params={"site": "plant1", "limit": 2}, headers=worker)
    assert first.status_code == 200, first.text
    assert [machine["id"] for machine in first.json()] == ids[:2]
    assert total_of(first) == 5
    assert links(first) == {
        "next": "/machines?site=plant1&limit=2&offset=2",
        "first": "/machines?site=plant1&limit=2&offset=0",
        "last": "/machines?site=plant1&limit=2&offset=4",
    }

    middle = await api.client.get(links(first)["next"], headers=worker)
    assert [machine["id"] for machine in middle.json()] == ids[2:4]
    assert total_of(middle) == 5
    assert links(middle)["next"] == "/machines?site=plant1&limit=2&offset=4"
    assert links(middle)["prev"] == "/machines?site=plant1&limit=2&offset=0"

    last = await api.client.get(links(middle)["next"], headers=worker)
    assert [machine["id"] for machine in last.json()] == ids[4:]
    assert "next" not in links(last)
    assert links(last)["prev"] == "/machines?site=plant1&limit=2&offset=2"
    back = await api.client.get(links(last)["prev"], headers=worker)
    assert [machine["id"] for machine in back.json()] == ids[2:4]


async def test_following_next_reads_the_whole_list_once(api: Api) -> None:
    planner = await api.actor(Role.PLANNER)
    created = [(await create_work_order(api, planner, lot_no=f"L-{number}"))["id"] for number in range(7)]
    await create_work_order(api, planner, product_code="P-OTHER")

    seen: list[int] = []
    url: str | None = "/workorders/?product_code=P-100&sort=-id&limit=3"
    pages = 0
    while url is not None:
        page = await api.client.get(url, headers=planner)
        assert page.status_code == 200, page.text
        assert total_of(page) == 7
        seen.extend(order["id"] for order in page.json())
        url = links(page).get("next")
        pages += 1
    assert (seen, pages) == (created[::-1], 3)


async def test_a_list_past_its_end_is_empty_and_points_back_to_the_last_page(api: Api) -> None:
    worker = await api.actor(Role.WORKER)
    await machines_of_plant1(api)
    beyond = await api.client.get("/machines", params={"site": "plant1", "limit": 2, "offset": 9}, headers=worker)
    assert (beyond.json(), total_of(beyond)) == ([], 5)
    assert "next" not in links(beyond)
    assert links(beyond)["prev"] == "/machines?site=plant1&limit=2&offset=4"

    nothing = await api.client.get("/machines", params={"site": "plant7"}, headers=worker)
    assert (nothing.json(), total_of(nothing)) == ([], 0)
    assert set(links(nothing)) == {"first", "last"}


async def test_every_paged_list_answers_an_array_with_its_headers(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    worker_id, worker = await api.signed_in(Role.WORKER)
    machine = await api.add(make_machine, "press-1")
    order = await create_work_order(api, admin)
    stage_id = order["stages"][0]["id"]
    await api.client.patch(f"/stages/{stage_id}", json={"machine_id": machine.id}, headers=admin)
    assigned = await api.client.post(f"/stages/{stage_id}/assignments", json={"user_id": worker_id}, headers=admin)
    assert assigned.status_code == 201, assigned.text
    await report_issue(api, worker, stage_id)
    await report_issue(api, worker, stage_id)

    paged: dict[str, tuple[Headers, int]] = {
        "/workorders/": (admin, 1),
        "/auth/users": (admin, 2),
        "/machines": (admin, 1),
        f"/machines/{machine.id}/stages": (admin, 1),
        "/issues": (admin, 2),
        "/me/stages": (worker, 1),
    }
    for url, (headers, total) in paged.items():
        response = await api.client.get(url, params={"limit": 1}, headers=headers)
        assert response.status_code == 200, (url, response.text)
        body: Any = response.json()
        assert isinstance(body, list), url
        assert (len(body), total_of(response)) == (1, total), url
        assert ("next" in links(response)) is (total > 1), url
        assert links(response)["first"] == f"{url}?limit=1&offset=0", url


async def test_lists_sent_whole_carry_their_size(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    order = await create_work_order(api, admin)
    stage_id = order["stages"][0]["id"]
    await api.client.post(f"/stages/{stage_id}/start", headers=admin)
    await report_issue(api, admin, stage_id)
    machine = await api.add(make_machine, "press-1")
    for _ in range(2):
        created = await api.client.post(
            f"/machines/{machine.id}/api-keys", json={"revoke_others": False}, headers=admin
        )
        assert created.status_code == 201, created.text

    for url, size in {
        f"/workorders/{order['id']}/stages": 2,
        f"/stages/{stage_id}/events": 1,
        f"/stages/{stage_id}/issues": 1,
        f"/machines/{machine.id}/api-keys": 2,
        "/issue-types": len(api.settings.tracking.issue_types),
    }.items():
        response = await api.client.get(url, headers=admin)
        assert response.status_code == 200, (url, response.text)
        assert (len(response.json()), total_of(response)) == (size, size), url


async def test_browsers_of_allowed_origins_may_read_the_list_headers(api: Api) -> None:
    settings = make_settings(api.settings.database.database_url, api={"cors_origins": ["https://mobile.example"]})
    async with running_api(api.database, settings) as custom:
        headers = await custom.actor(Role.PLANNER)
        origin = {"Origin": "https://mobile.example"}
        preflight = await custom.client.options(
            "/workorders/", headers={**origin, "Access-Control-Request-Method": "GET"}
        )
        listed = await custom.client.get("/workorders/", headers={**headers, **origin})
    assert preflight.status_code == 200, preflight.text
    assert listed.status_code == 200, listed.text
    assert listed.headers["access-control-allow-origin"] == "https://mobile.example"
    exposed = {name.strip().lower() for name in listed.headers["access-control-expose-headers"].split(",")}
    assert {"x-total-count", "link"} <= exposed


async def test_openapi_describes_lists_as_arrays_with_their_headers(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert not [name for name in spec["components"]["schemas"] if name.startswith("Page")]
    arrays = 0
    # Every GET answering an array is a list; a POST may answer the rows it made, which is no list to page.
    for path, operations in spec["paths"].items():
        ok = operations.get("get", {}).get("responses", {}).get("200", {})
        schema = ok.get("content", {}).get("application/json", {}).get("schema", {})
        if schema.get("type") != "array":
            continue
        arrays += 1
        headers = ok.get("headers", {})
        assert headers.get("X-Total-Count", {}).get("schema", {}).get("type") == "integer", f"GET {path}"
        paged = any(parameter["name"] == "offset" for parameter in operations["get"].get("parameters", []))
        assert ("Link" in headers) is paged, f"GET {path}"
    assert arrays >= 11
    work_orders = spec["paths"]["/workorders/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert work_orders["items"] == {"$ref": "#/components/schemas/WorkOrderRead"}
    stages = spec["paths"]["/workorders/{work_order_id}/stages"]["get"]["responses"]["200"]
    assert stages["content"]["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/StageRead"}
