"""Lists are JSON arrays, paged by `limit` / `offset`, with `X-Total-Count` and RFC 8288 `Link` headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request, Response
from starlette.datastructures import URL

T = TypeVar("T")

# Ids are PostgreSQL `integer`s: anything larger is refused as a 422 rather than overflowing in the database.
MAX_ID = 2_147_483_647
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="Numeric id")]

TOTAL_COUNT = "X-Total-Count"
LINK = "Link"
# Response headers of lists; api/app.py exposes them to browsers of other origins through CORS.
LIST_HEADERS = (TOTAL_COUNT, LINK)

_TOTAL_COUNT_DOC = {
    "description": "How many items the whole list holds",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
_LINK_DOC = {
    "description": 'RFC 8288 links to other pages of the list: `<url>; rel="next"` (only when more items follow), '
    '`rel="prev"` (only when offset > 0), `rel="first"`, `rel="last"`; path-relative URLs that keep the '
    "request's other query parameters",
    "required": True,
    "schema": {"type": "string"},
}
PAGED: dict[int | str, dict[str, Any]] = {
    200: {"description": "One page of the list", "headers": {TOTAL_COUNT: _TOTAL_COUNT_DOC, LINK: _LINK_DOC}}
}
"""`responses=` of a paged list route: documents its headers in OpenAPI."""
COUNTED: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole list", "headers": {TOTAL_COUNT: _TOTAL_COUNT_DOC}}
}
"""`responses=` of a list route that is not paged (a short list that belongs to one record)."""


@dataclass(frozen=True)
class PageParams:
    """Which slice of a list the client asked for, and the response that carries the list's headers."""

    limit: int
    offset: int
    url: URL
    response: Response

    def respond(self, items: list[T], total: int) -> list[T]:
        """Set `X-Total-Count` and `Link` for this page of `total` items; the items are the body."""
        self.response.headers[TOTAL_COUNT] = str(total)
        self.response.headers[LINK] = page_links(self.url, limit=self.limit, offset=self.offset, total=total)
        return items


def page_links(url: URL, *, limit: int, offset: int, total: int) -> str:
    """The `Link` header of the page at `offset`: `first` and `last` (pages of `limit` counted from 0), `prev`
    when offset > 0 (past the end: the last page) and `next` when more items follow."""
    last = (total - 1) // limit * limit if total > 0 else 0
    targets: dict[str, int] = {}
    if offset + limit < total:
        targets["next"] = offset + limit
    if offset > 0:
        targets["prev"] = min(max(offset - limit, 0), last)
    targets |= {"first": 0, "last": last}
    return ", ".join(f'<{_relative(url, limit=limit, offset=at)}>; rel="{rel}"' for rel, at in targets.items())


def _relative(url: URL, *, limit: int, offset: int) -> str:
    """The request's path and query with another `limit` / `offset`: no scheme or host, which a proxy may rewrite."""
    moved = url.include_query_params(limit=limit, offset=offset)
    return f"{moved.path}?{moved.query}"


def counted(response: Response, items: list[T]) -> list[T]:
    """Set `X-Total-Count` for a list sent whole; the items are the body."""
    response.headers[TOTAL_COUNT] = str(len(items))
    return items


def page_params(
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Items to skip")] = 0,
) -> PageParams:
    """Read `limit` and `offset` from the query string."""
    return PageParams(limit=limit, offset=offset, url=request.url, response=response)


Pagination = Annotated[PageParams, Depends(page_params)]
