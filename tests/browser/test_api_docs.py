"""Swagger UI at /api-docs in a real browser: served from the API's own files, under its CSP, logging in for real.

The system Chromium, driven by Playwright, against `shopfloor api` over a SQLite database with one planner. The
page must draw without any CSP violation or request to another host, log in through **Authorize** (the OAuth2
password form), call `GET /auth/me` with the token, and keep the token out of the browser's storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import insert

from api.ui.docs import ASSETS, ASSETS_FOLDER
from api.ui.router import STATIC_DIR
from core.db import create_engine_from_settings
from core.models import Role, UserAccount
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.browser import chromium, require_chromium, serve_api
from tests.support.factories import TEST_PASSWORD, password_hash

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

# Every CSP violation the page meets, as "directive blocked-uri", collected from the page's own event.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def require_prerequisites() -> None:
    """Fail (never skip) with the command that fixes a missing browser or Swagger UI file."""
    require_chromium()
    missing = sorted(name for name in ASSETS if not (STATIC_DIR / ASSETS_FOLDER / name).is_file())
    if missing:
        pytest.fail(f"Swagger UI's files {missing} are not in {STATIC_DIR / ASSETS_FOLDER}: run `make ui`")


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """A fresh SQLite database holding the user `planner`."""
    url = f"sqlite:///{tmp_path / 'api-docs.db'}"
    upgrade(url)
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    async with engine.begin() as conn:
        await conn.execute(
            insert(UserAccount).values(
                username="planner", role=Role.PLANNER, is_active=True, password_hash=password_hash()
            )
        )
    await engine.dispose()
    return url


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """`shopfloor api` on a free port over that database; answers its base URL."""
    yield from serve_api(database_url, tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """The system Chromium (never a downloaded one)."""
    require_prerequisites()
    async with chromium() as launched:
        yield launched


async def test_swagger_ui_runs_under_its_csp_and_logs_in(browser: Browser, server: str) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(RECORD_VIOLATIONS)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(server) else elsewhere.append(request.url))

    response = await page.goto(f"{server}/api-docs")
    assert response is not None
    assert response.status == 200
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Shopfloor API")

    # Authorize: the OAuth2 password form, sent by Swagger UI to the scheme's tokenUrl (/auth/login).
    await page.locator(".auth-wrapper button.authorize").click()
    oauth2 = page.locator(".modal-ux .auth-container").filter(has_text="OAuth2PasswordBearer")
    await oauth2.locator("#oauth_username").fill("planner")
    await oauth2.locator("#oauth_password").fill(TEST_PASSWORD)
    await oauth2.get_by_role("button", name="Apply given OAuth2 credentials").click()
    await expect(oauth2.get_by_role("button", name="Remove authorization")).to_be_visible()
    await oauth2.locator("button.btn-done").click()

    # Try it out: GET /auth/me with the token Swagger UI got.
    me = page.locator("#operations-auth-me_auth_me_get")
    await me.locator(".opblock-summary").click()
    await me.locator("button.try-out__btn").click()
    await me.locator("button.execute").click()
    answer = me.locator(".live-responses-table .response")
    await expect(answer.locator(".response-col_status")).to_have_text("200")
    await expect(answer.locator(".response-col_description")).to_contain_text('"role": "planner"')

    # The token lives in the page's memory only: nothing in localStorage (no persistAuthorization).
    stored = await page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
    assert "planner" not in stored
    assert "access_token" not in stored
    assert stored == "{}"

    assert await page.evaluate("window.cspViolations") == []
    assert elsewhere == []
    assert problems == []
    await context.close()
