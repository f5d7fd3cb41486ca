"""Request context: an id per request, one log line per request, and a clean 500 for anything unexpected."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.client import Network, client_address
from api.errors import send_problem
from core.logging import get_logger

log = get_logger("shopfloor.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Pure ASGI middleware, so context variables and errors are seen by everything inside it."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[Network] = ()):
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request (other scopes pass straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._incoming_id(scope) or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_address"] = client_address(scope, trusted_proxies=self.trusted_proxies)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if not response["started"]:
                await send_problem(
                    send_with_id,
                    status=500,
                    code="internal_error",
                    detail="An unexpected error occurred; it has been logged with this request id",
                    request_id=request_id,
                )
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=response["status"],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user_id=state.get("user_id"),
                client=state["client_address"],
            )
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def _incoming_id(scope: Scope) -> str | None:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate = value.decode("latin-1").strip()
                return candidate if _REQUEST_ID.match(candidate) else None
        return None
