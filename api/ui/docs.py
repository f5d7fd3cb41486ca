"""Swagger UI at /api-docs, served from the copy of swagger-ui-dist that `make ui` lays next to the operator view.

Nothing comes from a CDN. FastAPI writes the page, whose one inline script starts Swagger UI; the page's
Content-Security-Policy allows that script by its SHA-256, taken from the very HTML served, so the policy needs
no 'unsafe-inline'. The token pasted into **Authorize** stays in the page's memory (no `persistAuthorization`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

from api.deps import Context
from api.headers import page_policy
from api.ui.router import NO_CACHE, static_file
from core.errors import NotFound, Unavailable

DOCS_URL = "/api-docs"
OAUTH2_REDIRECT_URL = f"{DOCS_URL}/oauth2-redirect"
ASSETS_URL = f"{DOCS_URL}/assets"
# The folder of the UI bundle that holds them, and the files build.mjs copies there from swagger-ui-dist.
ASSETS_FOLDER = "api-docs"
ASSETS = frozenset(
    {
        "swagger-ui-bundle.js",
        "swagger-ui-bundle.js.LICENSE.txt",
        "swagger-ui.css",
        "favicon-32x32.png",
        "LICENSE.txt",
        "NOTICE.txt",
    }
)
NOT_BUILT = "Swagger UI's files are not built: run `make ui` (needs Node.js >= 20)"
# No validator badge: Swagger UI would otherwise send the schema's URL to validator.swagger.io.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
_INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>(.*?)</script>", flags=re.S | re.I)

router = APIRouter(prefix=DOCS_URL, include_in_schema=False)


@dataclass(frozen=True)
class Page:
    """A page's HTML and the CSP that allows exactly its inline scripts."""

    html: str
    content_security_policy: str

    @classmethod
    def of(cls, response: HTMLResponse) -> Page:
        """Take the HTML FastAPI made and hash each inline script in it."""
        html = bytes(response.body).decode()
        hashes = (
            f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
            for script in _INLINE_SCRIPT.findall(html)
        )
        return cls(html=html, content_security_policy=page_policy(*hashes))

    def response(self) -> HTMLResponse:
        """The page with its policy (and, from api.headers, `Cache-Control: no-store`)."""
        return HTMLResponse(self.html, headers={"Content-Security-Policy": self.content_security_policy})


@functools.cache
def swagger_page(*, title: str, openapi_url: str) -> Page:
    """Swagger UI's page for one app (built once per title and schema URL)."""
    return Page.of(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
    )


OAUTH2_REDIRECT_PAGE = Page.of(get_swagger_ui_oauth2_redirect_html())


@router.get("")
async def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI for this API's OpenAPI schema."""
    app = request.app
    return swagger_page(title=app.title, openapi_url=app.openapi_url).response()


@router.get("/oauth2-redirect")
async def api_docs_oauth2_redirect() -> HTMLResponse:
    """Where an OAuth2 login started in Swagger UI comes back to."""
    return OAUTH2_REDIRECT_PAGE.response()


# A plain `def` route, as in api/ui/router.py: the file-system checks run in FastAPI's thread pool.
@router.api_route("/assets/{name}", methods=["GET", "HEAD"])
def api_docs_asset(request: Request, context: Context, name: str) -> Response:
    """A file of Swagger UI (script, stylesheet, icon, licence); revalidated by ETag, as its name has no hash."""
    folder = context.ui_static_dir / ASSETS_FOLDER
    if not folder.is_dir():
        raise Unavailable(NOT_BUILT, code="ui_not_built")
    path = folder / name
    if name not in ASSETS or not path.is_file():
        raise NotFound("No such file of Swagger UI")
    return static_file(request, path, cache_control=NO_CACHE)
