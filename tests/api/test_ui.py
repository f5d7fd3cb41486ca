"""The operator view's static files at /ui: types, caching, the CSP header, and a clear 503 before `make ui`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient, Headers

from api.app import create_app
from api.context import context_of
from api.ui.router import CONTENT_SECURITY_POLICY
from tests.support.api import make_settings
from tests.support.db import DIALECT_FREE

pytestmark = DIALECT_FREE

WEB = Path(__file__).resolve().parents[2] / "api" / "ui" / "web"
INDEX = '<!doctype html><html><head><script type="module" src="/ui/assets/main-ABCD1234.js"></script></head></html>'
SCRIPT = "console.log('operator view');\n"
STYLES = "body { margin: 0; }\n"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A built bundle as `make ui` lays it out: index.html and content-hashed assets."""
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "index.html").write_text(INDEX)
    (static / "assets" / "main-ABCD1234.js").write_text(SCRIPT)
    (static / "assets" / "main-WXYZ9876.css").write_text(STYLES)
    (static / "assets" / "notes.txt").write_text("not hashed\n")
    (static / "secret.txt").write_text("outside assets\n")
    return static


async def client_for(static: Path, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}"))
    context_of(app).ui_static_dir = static
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
        yield client
    await context_of(app).engine.dispose()


@pytest.fixture
async def client(bundle: Path, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    """The app serving the test bundle (no database is touched by these routes)."""
    async for value in client_for(bundle, tmp_path):
        yield value


def assert_hardened(headers: Headers) -> None:
    csp = headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/ui", "/ui/"])
async def test_index_is_served_with_csp_and_revalidated(client: AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"]
    assert_hardened(response.headers)


async def test_index_answers_304_to_its_etag(client: AsyncClient) -> None:
    etag = (await client.get("/ui")).headers["etag"]
    again = await client.get("/ui", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert_hardened(again.headers)
    assert (await client.get("/ui", headers={"If-None-Match": '"something-else"'})).status_code == 200


@pytest.mark.parametrize(
    ("name", "content_type", "body"),
    [
        ("main-ABCD1234.js", "text/javascript; charset=utf-8", SCRIPT),
        ("main-WXYZ9876.css", "text/css; charset=utf-8", STYLES),
    ],
)
async def test_hashed_assets_are_immutable(client: AsyncClient, name: str, content_type: str, body: str) -> None:
    response = await client.get(f"/ui/assets/{name}")
    assert response.status_code == 200
    assert response.text == body
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert_hardened(response.headers)


async def test_unhashed_asset_is_revalidated(client: AsyncClient) -> None:
    response = await client.get("/ui/assets/notes.txt")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_head_gives_the_headers_only(client: AsyncClient) -> None:
    response = await client.head("/ui/assets/main-ABCD1234.js")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(SCRIPT))


@pytest.mark.parametrize(
    "path",
    [
        "/ui/assets/missing-ABCD1234.js",
        "/ui/assets/..%2Fsecret.txt",
        "/ui/assets/..%2F..%2Fstatic%2Findex.html",
        "/ui/assets/%2E%2E",
        "/ui/assets/.hidden",
        "/ui/assets/sub/main-ABCD1234.js",
    ],
)
async def test_only_files_of_the_assets_folder_are_served(client: AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/assets/main-ABCD1234.js"])
async def test_not_built_is_a_503_problem_naming_make_ui(tmp_path: Path, path: str) -> None:
    empty = tmp_path / "never-built"
    async for client in client_for(empty, tmp_path):
        response = await client.get(path)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "ui_not_built"
        assert problem["status"] == 503
        assert "operator view not built: run `make ui`" in problem["detail"]
        assert problem["request_id"] == response.headers["x-request-id"]


def test_ui_routes_stay_out_of_the_openapi_schema(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}"))
    paths = app.openapi()["paths"]
    assert "/machines" in paths  # the schema itself is there
    assert [path for path in paths if path.startswith("/ui")] == []


def test_page_source_has_no_inline_script_or_style() -> None:
    """The strict CSP (script-src 'self', style-src 'self') holds only while the page keeps to files."""
    html = (WEB / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S | re.I)
    assert scripts == [""]  # the one module script, with a src and no body
    assert re.search(r"<script\b(?![^>]*\bsrc=)", html, flags=re.I) is None
    assert re.search(r"<style\b", html, flags=re.I) is None
    assert re.search(r"\sstyle\s*=", html, flags=re.I) is None
    assert re.search(r"\son[a-z]+\s*=", html, flags=re.I) is None
    sources = "\n".join(path.read_text() for path in sorted((WEB / "src").rglob("*.js")))
    assert ".innerHTML" not in sources
    assert "eval(" not in sources
    assert "new Function" not in sources
