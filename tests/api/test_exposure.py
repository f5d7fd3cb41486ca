"""What the API gives away besides its answers: headers, the docs page, the existence of rows, taken usernames.

- Every response carries the security headers; tokens and what is read with them are never cached; a route's own
  headers (the hashed UI assets' year-long caching) win.
- /api-docs is Swagger UI from the API's own files (no CDN), under a CSP that allows its one inline script by hash,
  without `persistAuthorization`.
- A worker gets the same answer for a stage not assigned to them (of another work order, or the next stage of their
  own) as for a stage that does not exist, and a work order shows them only their stages.
- Registering a taken username gets one neutral message, whatever the case asked.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient, Headers, Response

from api.app import create_app
from api.context import context_of
from api.ui.docs import ASSETS, ASSETS_FOLDER
from api.ui.router import CONTENT_SECURITY_POLICY as UI_POLICY
from core.models import Issue, IssueStatus, Role, StageAssignment, StageEvent, StageEventKind, StageStatus
from tests.support.api import Api, bearer, make_settings
from tests.support.db import DIALECT_FREE
from tests.support.factories import TEST_PASSWORD, make_machine, make_work_order

pytestmark = DIALECT_FREE

T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
MISSING_ID = 2_000_000_000
TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def assert_secured(headers: Headers) -> None:
    """The headers every response must carry, whoever set them."""
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script\b(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, flags=re.S | re.I)


def sha256_source(script: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"


def directive(policy: str, name: str) -> list[str]:
    """The sources of one CSP directive."""
    for part in policy.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"no {name} in {policy!r}")


@pytest.fixture
def static(tmp_path: Path) -> Path:
    """A built bundle as `make ui` lays it out, with Swagger UI's files in api-docs/."""
    folder = tmp_path / "static"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text("<!doctype html><title>operator view</title>")
    (folder / "assets" / "main-ABCD1234.js").write_text("console.log('operator view');\n")
    (folder / ASSETS_FOLDER).mkdir()
    for name in ASSETS:
        (folder / ASSETS_FOLDER / name).write_bytes(f"the file {name}\n".encode())
    (folder / ASSETS_FOLDER / "index.html").write_text("not one of Swagger UI's files\n")
    return folder


async def client_for(static: Path, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}"))
    context_of(app).ui_static_dir = static
    boom = APIRouter()

    @boom.get("/boom")
    async def explode() -> None:
        raise RuntimeError("unexpected")

    app.include_router(boom)
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    await context_of(app).engine.dispose()


@pytest.fixture
async def client(static: Path, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    """The app over the test bundle, with a /boom route that fails unexpectedly (no database is touched)."""
    async for value in client_for(static, tmp_path):
        yield value


# --- headers --------------------------------------------------------------------------------------------------


async def test_authenticated_json_is_secured_and_never_stored(api: Api) -> None:
    headers = await api.actor(Role.WORKER)
    for response in (
        await api.client.get("/auth/me", headers=headers),
        await api.client.get("/workorders/", headers=headers),
        await api.client.get("/stages/999999", headers=headers),  # a 404 problem
    ):
        assert response.headers["content-type"].startswith(("application/json", "application/problem+json"))
        assert_secured(response.headers)
        assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("form", [False, True], ids=["json", "oauth2-form"])
async def test_token_responses_are_never_stored(api: Api, form: bool) -> None:
    await api.create_user("token-user", Role.PLANNER)
    credentials = {"username": "token-user", "password": TEST_PASSWORD}
    if form:
        response = await api.client.post("/auth/login", data={"grant_type": "password", **credentials})
    else:
        response = await api.client.post("/auth/login", json=credentials)
    assert response.status_code == 200, response.text
    assert "access_token" in response.json()
    assert response.headers["cache-control"] == "no-store"
    assert_secured(response.headers)


async def test_a_refused_token_gets_the_headers_too(api: Api) -> None:
    response = await api.client.get("/auth/me", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_secured(response.headers)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/auth/me", "/no-such-route", "/boom"])
async def test_every_response_carries_the_headers(client: AsyncClient, path: str) -> None:
    """Public answers, the 401 and 404 problems, and the request-context layer's own 500."""
    response = await client.get(path)
    assert response.status_code in (200, 401, 404, 500)
    assert response.headers["x-request-id"]
    assert_secured(response.headers)
    assert response.headers["cache-control"] == "no-store"


async def test_a_route_s_own_headers_are_kept(client: AsyncClient) -> None:
    """The hashed UI asset keeps its year-long caching and the page policy; nothing is sent twice."""
    response = await client.get("/ui/assets/main-ABCD1234.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-security-policy"] == UI_POLICY
    assert_secured(response.headers)
    names = [name.lower() for name, _ in response.headers.raw]
    assert len(names) == len(set(names))


# --- /api-docs ----------------------------------------------------------------------------------------------


async def test_api_docs_are_local_under_a_csp_that_allows_only_their_inline_script(client: AsyncClient) -> None:
    response = await client.get("/api-docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert 'id="swagger-ui"' in html
    assert re.search(r"""(src|href)=["']?(https?:)?//""", html) is None  # nothing from another host
    assert "cdn" not in html.lower()
    assert "persistAuthorization" not in html
    assert "'/openapi.json'" in html
    assert "window.location.origin + '/api-docs/oauth2-redirect'" in html

    policy = response.headers["content-security-policy"]
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert directive(policy, "default-src") == ["'none'"]
    assert directive(policy, "style-src") == ["'self'"]
    assert directive(policy, "connect-src") == ["'self'"]
    assert directive(policy, "frame-ancestors") == ["'none'"]
    (script,) = inline_scripts(html)
    assert "SwaggerUIBundle(" in script
    assert directive(policy, "script-src") == ["'self'", sha256_source(script)]
    assert_secured(response.headers)
    assert response.headers["cache-control"] == "no-store"


async def test_api_docs_assets_are_served_with_their_types(client: AsyncClient) -> None:
    html = (await client.get("/api-docs")).text
    urls = re.findall(r"""(?:src|href)="([^"]+)\"""", html)
    assert sorted(urls) == sorted(f"/api-docs/assets/{name}" for name in TYPES)
    for url in urls:
        response = await client.get(url)
        name = url.rsplit("/", 1)[1]
        assert response.status_code == 200, url
        assert response.headers["content-type"] == TYPES[name]
        assert response.content == f"the file {name}\n".encode()
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["etag"]
        assert_secured(response.headers)
        again = await client.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    licence = await client.get("/api-docs/assets/LICENSE.txt")
    assert licence.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    "name", ["index.html", "missing.js", "..%2Findex.html", "..%2F..%2Fstatic%2Findex.html", "swagger-ui.css.map"]
)
async def test_only_swagger_ui_files_are_served(client: AsyncClient, name: str) -> None:
    response = await client.get(f"/api-docs/assets/{name}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_api_docs_assets_before_make_ui_are_a_503_naming_it(tmp_path: Path) -> None:
    async for client in client_for(tmp_path / "never-built", tmp_path):
        response = await client.get("/api-docs/assets/swagger-ui-bundle.js")
        assert response.status_code == 503
        assert response.json()["code"] == "ui_not_built"
        assert "run `make ui`" in response.json()["detail"]
        assert (await client.get("/api-docs")).status_code == 200  # the page itself is made by the API


async def test_oauth2_redirect_page_runs_under_its_own_hash(client: AsyncClient) -> None:
    response = await client.get("/api-docs/oauth2-redirect")
    assert response.status_code == 200
    (script,) = inline_scripts(response.text)
    assert "swaggerUIRedirectOauth2" in script
    policy = response.headers["content-security-policy"]
    assert directive(policy, "script-src") == ["'self'", sha256_source(script)]
    assert "unsafe-inline" not in policy


def test_docs_routes_stay_out_of_the_openapi_schema(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}"))
    assert [path for path in app.openapi()["paths"] if path.startswith("/api-docs")] == []


# --- existence of stages and work orders ----------------------------------------------------------------------


@dataclass(frozen=True)
class Hidden:
    """A route a worker calls on a stage (or work order) of someone else's work order, and what they must get."""

    method: str
    path: str
    status: int  # 404 where a worker may call the route on what they can see, 403 for planners' routes
    body: Callable[[int], dict[str, Any]] | None = None  # given the worker's id
    # The stage's status that would let the action through if the worker could act on it.
    stage_status: StageStatus = StageStatus.PLANNED


HIDDEN_ROUTES = [
    Hidden("GET", "/stages/{stage_id}", 404),
    Hidden("PATCH", "/stages/{stage_id}", 403, lambda _: {"stage_name": "Renamed"}),
    Hidden("POST", "/stages/{stage_id}/start", 404),
    Hidden("POST", "/stages/{stage_id}/pause", 404, lambda _: {"reason": "mould change"}, StageStatus.IN_PROGRESS),
    Hidden("POST", "/stages/{stage_id}/resume", 404, stage_status=StageStatus.PAUSED),
    Hidden("POST", "/stages/{stage_id}/done", 404, lambda _: {"good_qty": 9, "scrap_qty": 1}, StageStatus.IN_PROGRESS),
    Hidden("POST", "/stages/{stage_id}/assignments", 403, lambda worker_id: {"user_id": worker_id}),
    Hidden("DELETE", "/stages/{stage_id}/assignments/{worker_id}", 403),
    Hidden("GET", "/stages/{stage_id}/events", 404),
    Hidden("GET", "/stages/{stage_id}/metrics", 404),
    Hidden("GET", "/stages/{stage_id}/oee", 404, stage_status=StageStatus.IN_PROGRESS),
    Hidden("POST", "/stages/{stage_id}/issue", 404, lambda _: {"type": "quality", "description": "flash"}),
    Hidden("GET", "/stages/{stage_id}/issues", 404),
    Hidden("PATCH", "/stages/{stage_id}/issues/{issue_id}", 403, lambda _: {"status": "ack", "note": "seen"}),
    Hidden("GET", "/workorders/{work_order_id}", 404),
    Hidden("GET", "/workorders/{work_order_id}/stages", 404),
    Hidden("GET", "/workorders/{work_order_id}/metrics", 404),
    Hidden("PATCH", "/workorders/{work_order_id}", 403, lambda _: {"notes": "check the mould"}),
    Hidden("POST", "/workorders/{work_order_id}/cancel", 403, lambda _: {"reason": "customer"}),
]


def answer(response: Response, *ids: int) -> tuple[int, str, str]:
    """Status, code and detail, with the ids asked for taken out of the detail."""
    body = response.json()
    detail = body["detail"]
    for value in ids:
        detail = detail.replace(str(value), "<id>")
    return response.status_code, body["code"], detail


WORK_ORDER_ROUTES = [route for route in HIDDEN_ROUTES if route.path.startswith("/workorders/")]
STAGE_ROUTES = [route for route in HIDDEN_ROUTES if route not in WORK_ORDER_ROUTES]


@dataclass(frozen=True)
class HiddenRows:
    """A stage out of the worker's sight (with an open issue, assigned to another worker) and its work order."""

    worker_id: int
    worker: dict[str, str]
    own_stage_id: int
    machine_id: int
    other_id: int
    stage_id: int
    work_order_id: int
    issue_id: int


async def hidden_rows(api: Api, stage_status: StageStatus, *, sibling: bool) -> HiddenRows:
    """The worker has stage 1 of their work order; the hidden stage is stage 2 of it (`sibling`) or of another one.

    The worker's own stage has started, so the previous-stage rule would let a start of the sibling through.
    """
    worker_id, worker = await api.signed_in(Role.WORKER)
    other = await api.create_user("someone-else", Role.WORKER)
    machine = await api.add(make_machine, "press-9")
    async with api.session() as session:
        mine = await make_work_order(
            session,
            start=T0,
            stages=[StageStatus.IN_PROGRESS, stage_status] if sibling else [StageStatus.IN_PROGRESS],
            machine_id=machine.id,
            product_code="P-MINE",
        )
        session.add(StageEvent(stage_id=mine.stages[0].id, kind=StageEventKind.START, at=T0))
        if sibling:
            hidden, work_order_id = mine.stages[1], mine.id
        else:
            theirs = await make_work_order(
                session, start=T0, stages=[stage_status], machine_id=machine.id, product_code="P-THEIRS"
            )
            hidden, work_order_id = theirs.stages[0], theirs.id
        session.add(StageAssignment(stage_id=mine.stages[0].id, user_id=worker_id))
        session.add(StageAssignment(stage_id=hidden.id, user_id=other.id))
        if stage_status is not StageStatus.PLANNED:
            session.add(StageEvent(stage_id=hidden.id, kind=StageEventKind.START, at=T0))
        issue = Issue(stage_id=hidden.id, type="quality", description="burrs", status=IssueStatus.OPEN)
        session.add(issue)
        await session.flush()
        return HiddenRows(
            worker_id, worker, mine.stages[0].id, machine.id, other.id, hidden.id, work_order_id, issue.id
        )


@pytest.mark.parametrize(
    ("route", "sibling"),
    [
        *(
            pytest.param(route, False, id=f"{route.method} {route.path} of another work order")
            for route in HIDDEN_ROUTES
        ),
        # Stage 2 of the work order whose stage 1 is the worker's: out of sight all the same.
        *(pytest.param(route, True, id=f"{route.method} {route.path} of their work order") for route in STAGE_ROUTES),
    ],
)
async def test_a_worker_cannot_tell_what_is_out_of_sight_from_what_does_not_exist(
    api: Api, route: Hidden, sibling: bool
) -> None:
    rows = await hidden_rows(api, route.stage_status, sibling=sibling)

    async def call(stage_id: int, work_order_id: int) -> Response:
        path = route.path.format(
            stage_id=stage_id, work_order_id=work_order_id, worker_id=rows.worker_id, issue_id=rows.issue_id
        )
        body = route.body(rows.worker_id) if route.body else None
        return await api.client.request(route.method, path, json=body, headers=rows.worker)

    out_of_sight = await call(rows.stage_id, rows.work_order_id)
    missing = await call(MISSING_ID, MISSING_ID)
    assert answer(out_of_sight, rows.stage_id, rows.work_order_id) == answer(missing, MISSING_ID)
    assert out_of_sight.status_code == route.status, out_of_sight.text
    # Nothing was changed on the way.
    planner = await api.actor(Role.PLANNER)
    seen = (await api.client.get(f"/stages/{rows.stage_id}", headers=planner)).json()
    assert seen["status"] == route.stage_status.value
    assert [assignee["user_id"] for assignee in seen["assignees"]] == [rows.other_id]
    assert seen["open_issues"] == 1


def _ids(response: Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()]


async def test_a_worker_s_work_order_shows_only_their_stages_everywhere(api: Api) -> None:
    """Reads, lists, metrics, issue counts and a machine's stages leave the sibling stage out; planners see it."""
    rows = await hidden_rows(api, StageStatus.IN_PROGRESS, sibling=True)
    worker, planner, own_id = rows.worker, await api.actor(Role.PLANNER), rows.own_stage_id
    wo = f"/workorders/{rows.work_order_id}"

    order = (await api.client.get(wo, headers=worker)).json()
    assert [stage["id"] for stage in order["stages"]] == [own_id]
    assert order["open_issues"] == 0  # the open issue is on the sibling
    assert order["status"] == "in_progress"  # the work order's own status
    assert _ids(await api.client.get(f"{wo}/stages", headers=worker)) == [own_id]
    metrics = (await api.client.get(f"{wo}/metrics", headers=worker)).json()
    assert [stage["stage_id"] for stage in metrics["stages"]] == [own_id]
    assert metrics["planned_duration"] == metrics["planned_duration_min"]
    listed = await api.client.get("/workorders/", headers=worker)
    assert [[stage["id"] for stage in item["stages"]] for item in listed.json()] == [[own_id]]
    assert (await api.client.get("/workorders/", params={"has_open_issues": "true"}, headers=worker)).json() == []
    for path in (f"/machines/{rows.machine_id}/stages", "/me/stages"):
        response = await api.client.get(path, headers=worker)
        assert [item["stage"]["id"] for item in response.json()] == [own_id], path
    listing = await api.client.get("/issues", params={"work_order_stage_id": rows.stage_id}, headers=worker)
    assert (listing.status_code, listing.json()["code"]) == (403, "forbidden")
    # Their own stage still works.
    paused = await api.client.post(f"/stages/{own_id}/pause", json={"reason": "break"}, headers=worker)
    assert paused.status_code == 200, paused.text

    # Planners see both stages and the issue.
    order = (await api.client.get(wo, headers=planner)).json()
    assert [stage["id"] for stage in order["stages"]] == [own_id, rows.stage_id]
    assert order["open_issues"] == 1
    metrics = (await api.client.get(f"{wo}/metrics", headers=planner)).json()
    assert [stage["stage_id"] for stage in metrics["stages"]] == [own_id, rows.stage_id]


# --- registration -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", ["foreman", "FOREMAN", "Foreman", " foreman "])
async def test_a_taken_username_gets_one_neutral_answer_whatever_its_case(api: Api, asked: str) -> None:
    await api.create_user("foreman", Role.ADMIN)
    response = await api.client.post("/auth/register", json={"username": asked, "password": "long-enough-1"})
    assert response.status_code == 409
    body = response.json()
    assert (body["code"], body["detail"]) == ("username_taken", "This username is not available")
    assert "foreman" not in response.text.lower()


async def test_an_admin_creating_a_taken_username_gets_the_same_answer(api: Api) -> None:
    await api.create_user("foreman", Role.WORKER)
    admin = await api.actor(Role.ADMIN)
    response = await api.client.post(
        "/auth/users", json={"username": "FOREMAN", "password": "long-enough-1", "role": "worker"}, headers=admin
    )
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["detail"]) == ("username_taken", "This username is not available")
