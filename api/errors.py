"""The one mapping from errors to HTTP: RFC 9457 problem details for every failure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from core.db import DATABASE_UNAVAILABLE_ERRORS, is_statement_timeout, unique_violation
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
from core.logging import get_logger

log = get_logger("shopfloor.api")

PROBLEM_JSON = "application/problem+json"
# What a client waits before it retries a request the database could not answer (Retry-After, seconds).
DATABASE_RETRY_AFTER_S = 5

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

# Unique keys a service checks before it writes, with the code and message of that check: a request that races past
# the check gets the same answer from the database's constraint. Other keys answer `conflict`.
_UNIQUE_KEYS = {
    "uq_user_account_username": ("username_taken", "This username is not available"),
    "uq_machine_site_code": ("machine_exists", "A machine with this site and code exists already"),
    "pk_stage_assignment": ("already_assigned", "The user is already assigned to this stage"),
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


async def send_problem(
    send: Send,
    *,
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A whole problem-details response sent on a raw ASGI channel (for pure ASGI middleware)."""
    payload = json.dumps(problem_body(status=status, code=code, detail=detail, request_id=request_id)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


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
    if isinstance(error, RateLimited | Unavailable) and error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, InvalidInput) or (isinstance(error, Conflict) and error.fields):
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


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    # One warning names the cause (the driver's error, never SQLAlchemy's text, which carries the statement and
    # its parameters); a traceback per request would bury it while the database is down.
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    if is_statement_timeout(error):
        code, message = "database_timeout", "The database did not answer in time; try again shortly"
    else:
        code, message = "database_unavailable", "The database cannot be reached; try again shortly"
    log.warning(code, error=type(cause).__name__, message=" ".join(str(cause).split()))
    return await _domain_error(request, Unavailable(message, code=code, retry_after_s=DATABASE_RETRY_AFTER_S))


async def _integrity_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, IntegrityError)  # noqa: S101 -- registered for this class only
    violation = unique_violation(error)
    if violation is None:  # a foreign key, check or not-null violation is a bug here: the middleware's 500
        raise error
    log.info("unique_violation", constraint=violation.constraint, table=violation.table)
    code, message = _UNIQUE_KEYS.get(violation.constraint or "", ("conflict", ""))
    fields = " and ".join(violation.columns) or "key"
    conflict = Conflict(
        message or f"The {fields} {'are' if len(violation.columns) > 1 else 'is'} already in use",
        code=code,
        fields=dict.fromkeys(violation.columns, "already in use"),
    )
    return await _domain_error(request, conflict)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are turned into a 500 by the request middleware.

    A unique violation (a race past a service's check) is a 409 naming the key's fields; a database that cannot
    be reached, has no free connection or ran past the statement timeout is a 503 with Retry-After.
    """
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    for error_class in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_class, _database_unavailable)
