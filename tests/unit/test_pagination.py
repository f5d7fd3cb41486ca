"""The `Link` header of a list page: which neighbours it names and what their URLs keep."""

from __future__ import annotations

import pytest
from starlette.datastructures import URL

from api.pagination import page_links

STAGES = URL("http://testserver/machines/3/stages?status=in_progress&status=paused&limit=10&offset=20")


def targets(header: str) -> dict[str, str]:
    """`{rel: url}` of a Link header as page_links writes it."""
    found = {}
    for part in header.split(", "):
        url, rel = part.split("; ")
        found[rel.removeprefix('rel="').removesuffix('"')] = url.strip("<>")
    return found


def offsets(header: str) -> dict[str, int]:
    """`{rel: offset}` of a Link header."""
    return {rel: int(URL(url).query.rsplit("offset=", 1)[1]) for rel, url in targets(header).items()}


@pytest.mark.parametrize(
    ("offset", "total", "expected"),
    [
        (0, 45, {"next": 10, "first": 0, "last": 40}),  # first page
        (20, 45, {"next": 30, "prev": 10, "first": 0, "last": 40}),  # a middle page
        (40, 45, {"prev": 30, "first": 0, "last": 40}),  # last page, partly filled
        (30, 40, {"prev": 20, "first": 0, "last": 30}),  # last page, exactly filled
        (0, 10, {"first": 0, "last": 0}),  # one page holds it all
        (0, 0, {"first": 0, "last": 0}),  # an empty list
        (5, 45, {"next": 15, "prev": 0, "first": 0, "last": 40}),  # an offset between pages: prev starts at 0
        (90, 45, {"prev": 40, "first": 0, "last": 40}),  # past the end: back to the last page
    ],
)
def test_links_name_only_the_pages_that_exist(offset: int, total: int, expected: dict[str, int]) -> None:
    assert offsets(page_links(STAGES, limit=10, offset=offset, total=total)) == expected


def test_links_keep_the_path_and_every_other_query_parameter() -> None:
    link = targets(page_links(STAGES, limit=10, offset=20, total=45))["next"]
    assert link == "/machines/3/stages?status=in_progress&status=paused&limit=10&offset=30"


def test_links_add_limit_and_offset_when_the_request_had_none() -> None:
    link = targets(page_links(URL("http://testserver/workorders/?sort=-id"), limit=50, offset=0, total=51))["next"]
    assert link == "/workorders/?sort=-id&limit=50&offset=50"
