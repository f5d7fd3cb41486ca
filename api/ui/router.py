"""The operator web view: the bundle that `make ui` builds from api/ui/web, served at /ui.

These are public static files (kept out of the OpenAPI schema); everything they show comes from authenticated
API calls. Every response carries a strict Content-Security-Policy: the bundle has no inline script or style.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from api.deps import Context
from api.headers import page_policy
from core.errors import NotFound, Unavailable

STATIC_DIR = Path(__file__).resolve().parent / "static"
NOT_BUILT = "operator view not built: run `make ui` (needs Node.js >= 20)"

CONTENT_SECURITY_POLICY = page_policy()
# index.html names the assets by content hash: it is revalidated every time, the assets never change.
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
_HASHED = re.compile(r"-[A-Z0-9]{8}\.[a-z0-9.]+$")
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


def static_file(request: Request, path: Path, *, cache_control: str) -> Response:
    """A file with its type, ETag and caching, or a 304 when the client holds it already."""
    # The headers every response gets (nosniff, no framing, no referrer) come from api.headers' middleware.
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": cache_control}
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    response = FileResponse(path, media_type=media_type, headers=headers, stat_result=path.stat())
    etag = response.headers["etag"]
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return response


# Plain `def` routes: FastAPI runs them in its thread pool, so the file-system checks never block the event loop.
@router.api_route("", methods=["GET", "HEAD"])
@router.api_route("/", methods=["GET", "HEAD"])
def operator_view(request: Request, context: Context) -> Response:
    """The operator view's page (503 with a problem saying how to build it when the bundle is missing)."""
    index = context.ui_static_dir / "index.html"
    if not index.is_file():
        raise Unavailable(NOT_BUILT, code="ui_not_built")
    return static_file(request, index, cache_control=NO_CACHE)


@router.api_route("/assets/{name}", methods=["GET", "HEAD"])
def operator_view_asset(request: Request, context: Context, name: str) -> Response:
    """A script, stylesheet or source map of the bundle; content-hashed names are cached for a year."""
    folder = context.ui_static_dir
    if not (folder / "index.html").is_file():
        raise Unavailable(NOT_BUILT, code="ui_not_built")
    path = folder / "assets" / name
    if not _ASSET_NAME.match(name) or not path.is_file():
        raise NotFound("No such file in the operator view")
    return static_file(request, path, cache_control=IMMUTABLE if _HASHED.search(name) else NO_CACHE)
