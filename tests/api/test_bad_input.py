"""Bad input on every route is a problem-details 4xx, never a 500.

The routes, their parameters and their body fields come from the app's own OpenAPI document, so a new route
is covered without touching this file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.models import Role
from tests.support.api import Api

BAD_SCALARS: list[Any] = [
    None, "", "x" * 10_000, -1, 0, 2**63, 99999999999999999999, 1.5, True, [], {},
    "ünïcødé \u0000", "'; DROP TABLE x;--",
]  # fmt: skip
BAD_PATH_VALUES = ["abc", "-1", "0", "99999999999999999999", "1.5", "%00", "1;2"]
BAD_RAW_BODIES = [b"", b"{", b"null", b"[]", b'"text"', b"1", b"\xff\xfe", b"[" * 5000 + b"]" * 5000]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    query: dict[str, Any]
    body: bytes | None

    def __str__(self) -> str:
        return f"{self.method} {self.path} query={self.query} body={(self.body or b'')[:60]!r}"


def _body_fields(operation: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema.get("properties", {}))


def cases(spec: dict[str, Any]) -> Iterator[Case]:
    """Malformed variations of every operation: path ids, query values, raw bodies, wrong field types."""
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            path_names = [p["name"] for p in parameters if p["in"] == "path"]
            good_path = template
            for name in path_names:
                good_path = good_path.replace("{" + name + "}", "1")
            for name in path_names:
                for value in BAD_PATH_VALUES:
                    yield Case(method.upper(), template.replace("{" + name + "}", value), {}, None)
            for parameter in (p for p in parameters if p["in"] == "query"):
                for value in ("abc", "-1", "99999999999999999999", "x" * 5000, ""):
                    yield Case(method.upper(), good_path, {parameter["name"]: value}, None)
            if "requestBody" not in operation:
                continue
            for raw in BAD_RAW_BODIES:
                yield Case(method.upper(), good_path, {}, raw)
            for field in _body_fields(operation, spec):
                for value in BAD_SCALARS:
                    yield Case(method.upper(), good_path, {}, json.dumps({field: value}).encode())


async def test_no_malformed_request_gets_a_500(api: Api) -> None:
    headers = await api.actor(Role.ADMIN)
    await api.create_user("existing", Role.WORKER)
    spec = (await api.client.get("/openapi.json")).json()
    failures = []
    checked = 0
    for case in cases(spec):
        response = await api.client.request(
            case.method,
            case.path,
            params=case.query,
            content=case.body,
            headers={**headers, "content-type": "application/json"},
        )
        checked += 1
        problem = response.headers.get("content-type") == "application/problem+json"
        if response.status_code >= 500 or (response.status_code >= 400 and not problem):
            failures.append(f"{case} -> {response.status_code} {response.text[:200]}")
    assert checked > 100
    assert not failures, "\n".join(failures[:20])
