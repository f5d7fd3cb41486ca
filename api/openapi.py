"""The OpenAPI document describes every answer as it is sent: the problem responses routes share, and the schemas
of the live stream's events.

Routes declare their success responses; the problems they can answer with come from a few rules applied to the
whole document in one place (`document_responses`), so a new route is covered without repeating them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from api.errors import PROBLEM_JSON
from api.machines.stream import STREAM_EVENTS

REF_TEMPLATE = "#/components/schemas/{model}"


class FieldProblem(BaseModel):
    """What is wrong with one field of the request."""

    field: str
    message: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem-details document; other members (`current_status`, `allowed_actions`…) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    errors: list[FieldProblem] | None = None


# Which problems an operation can answer with, by what the document says of it (see docs/api.md, "Errors").
_DATABASE = {
    503: "The database cannot be reached or did not answer in time (`database_unavailable`, `database_timeout`; "
    "with Retry-After)",
}
_WITH_INPUT = {
    422: "The request does not validate (`validation_failed`, field errors in `errors`) or its values do not fit",
}
_AUTHENTICATED = {
    401: "No token, or a bad, expired or revoked one (`unauthenticated`, `token_revoked`; with WWW-Authenticate)",
    403: "The caller's role may not do this (`forbidden`)",
}
_WITH_ID = {404: "No such row, or one the caller may not see (`not_found`: the same answer)"}
_CHANGING = {409: "The request clashes with the current state (`conflict` or a more precise code)"}
_READ_METHODS = {"get", "head"}
# Liveness touches nothing, the database included.
_WITHOUT_DATABASE = {"/health"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF_TEMPLATE.format(model="Problem")}}},
    }


def _names_a_row(parameter: dict[str, Any]) -> bool:
    """A path parameter, or a query parameter naming a row by its id (`?machine_id=`)."""
    return parameter.get("in") == "path" or (
        parameter.get("in") == "query" and parameter.get("name", "").endswith("_id")
    )


def _problems_of(path: str, operation: dict[str, Any], method: str) -> dict[int, str]:
    problems = {} if path in _WITHOUT_DATABASE else dict(_DATABASE)
    if operation.get("parameters") or operation.get("requestBody"):
        problems |= _WITH_INPUT
    if operation.get("security"):
        problems |= _AUTHENTICATED
    if any(_names_a_row(parameter) for parameter in operation.get("parameters", [])):
        problems |= _WITH_ID
    if method not in _READ_METHODS:
        problems |= _CHANGING
    return problems


def _add_problems(path: str, operation: dict[str, Any], method: str) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, description in _problems_of(path, operation, method).items():
        declared = responses.get(str(status))
        if declared is None:
            responses[str(status)] = _problem(description)
        elif status == 422 or "content" not in declared:
            # FastAPI's own 422 names its `HTTPValidationError` body as application/json; ours is a problem.
            declared["content"] = _problem(description)["content"]
    for code, answer in responses.items():
        if code[0] in "45" and "content" not in answer:
            answer["content"] = _problem(answer.get("description", ""))["content"]


def _component_schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    _, definitions = models_json_schema([(model, "serialization") for model in models], ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = definitions.get("$defs", {})
    return schemas


def document_responses(app: FastAPI) -> None:
    """Give every operation the problem responses it can answer with and add the schemas they and the live stream's
    events refer to, so the document matches what is sent (tests/api/test_openapi_conformance.py)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        for path, path_item in document.get("paths", {}).items():
            for method, operation in path_item.items():
                if isinstance(operation, dict) and "responses" in operation:
                    _add_problems(path, operation, method)
        schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in _component_schemas([Problem, *STREAM_EVENTS]).items():
            schemas.setdefault(name, schema)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
