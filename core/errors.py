"""Domain errors: a stable code and a message, never an HTTP status (the API maps them in one place)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "domain_error"
    title = "Request cannot be processed"

    def __init__(self, message: str, *, code: str | None = None, extra: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra: dict[str, Any] = dict(extra or {})


class NotFound(DomainError):
    """The thing does not exist, or the actor may not know that it does."""

    code = "not_found"
    title = "Not found"


class Unauthenticated(DomainError):
    """No valid credentials were given."""

    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(DomainError):
    """The actor is known but may not do this."""

    code = "forbidden"
    title = "Forbidden"


class Conflict(DomainError):
    """The request clashes with the current state (a duplicate, the last admin, …); `fields` names a duplicate key."""

    code = "conflict"
    title = "Conflict"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        fields: Mapping[str, str] | None = None,
    ):
        super().__init__(message, code=code, extra=extra)
        self.fields = dict(fields or {})


class InvalidTransition(Conflict):
    """A state machine was asked for a move it does not allow."""

    code = "invalid_transition"
    title = "Invalid state transition"


class InvalidInput(DomainError):
    """Well-formed input that breaks a domain rule; `fields` maps a field path to a message."""

    code = "invalid_input"
    title = "Invalid input"

    def __init__(self, message: str, *, fields: Mapping[str, str] | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.fields = dict(fields or {})


class RateLimited(DomainError):
    """Too many attempts; retry after `retry_after_s` seconds."""

    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A dependency (the database, the schema) is not ready; retry after `retry_after_s` seconds when given."""

    code = "unavailable"
    title = "Service unavailable"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(message, code=code, extra=extra)
        self.retry_after_s = retry_after_s
