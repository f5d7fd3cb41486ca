"""The one mapping from errors to HTTP: RFC 9457 problem details for every failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

PROBLEM_JSON = "application/problem+json"

_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Unauthenticated: 401,
    Forbidden: 403,
    Conflict: 409,
    InvalidInput: 422,
    RateLimited: 429,
    Unavailable: 503,
}

_HTTP_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def problem_type(code: str) -> str:
    """A stable URI naming the kind of problem."""
    return f"urn:shopfloor:problem:{code}"


def problem_body(
    *, status: int, code: str, detail: str, request_id: str | None, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The problem-details document; extension members go after the standard ones."""
    return {
        "type": problem_type(code),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
        **extra,
    }


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    detail: str,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem-details response carrying this request's id."""
    body = problem_body(
        status=status, code=code, detail=detail, title=title, request_id=request_id_of(request), **extra
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def request_id_of(request: Request) -> str | None:
    """The id the request-context middleware gave this request."""
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def status_for(error: DomainError) -> int:
    """The HTTP status of a domain error: the closest mapped ancestor class wins."""
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def _field_path(location: Sequence[Any]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"} and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)  # noqa: S101 -- registered for DomainError only
    status = status_for(error)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = dict(error.extra)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, InvalidInput):
        extra["errors"] = [
            {"field": field, "message": message, "type": error.code} for field, message in error.fields.items()
        ]
    return problem_response(
        request,
        status=status,
        code=error.code,
        title=error.title,
        detail=error.message,
        headers=headers,
        **extra,
    )


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)  # noqa: S101 -- registered for this class only
    fields = [
        {
            "field": _field_path(item.get("loc", ())),
            "message": item.get("msg", ""),
            "type": item.get("type", ""),
        }
        for item in error.errors()
    ]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields[:5])
    return problem_response(
        request,
        status=422,
        code="validation_failed",
        title="Request validation failed",
        detail=summary or "The request is not valid",
        errors=fields,
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 -- registered for this class only
    status = error.status_code
    code = _HTTP_CODES.get(status, "http_error")
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
    headers = dict(error.headers or {})
    return problem_response(request, status=status, code=code, detail=detail, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are turned into a 500 by the request middleware."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
