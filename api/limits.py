"""Request-body limits counted on the bytes that actually arrive, before authentication and parsing.

`Content-Length` is only a claim (and absent from chunked requests): the limit is enforced on the receive channel,
so a body is refused with 413 as soon as it grows past the limit, whatever the headers said.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import send_problem


class BodyTooLarge(HTTPException):
    """The request body passed its limit (raised from `receive`, mapped to 413 by the app's error handlers)."""

    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Pure ASGI: a default limit and tighter ones for some routes (method, path pattern, bytes)."""

    def __init__(self, app: ASGIApp, *, default: int, routes: Sequence[tuple[str, str, int]] = ()):
        self.app = app
        self.default = default
        self.routes = [(method, re.compile(pattern), limit) for method, pattern, limit in routes]

    def limit_for(self, scope: Scope) -> int:
        """The byte limit of this request's body."""
        for method, pattern, limit in self.routes:
            if scope["method"] == method and pattern.fullmatch(scope["path"]):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the body of one HTTP request as it is received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(scope, send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Read outside the app's error handlers (a middleware, a streaming route): answer here.
            if not started:
                await _send_413(scope, send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(scope: Scope, send: Send, limit: int) -> None:
    await send_problem(
        send,
        status=413,
        code="payload_too_large",
        detail=f"The request body is larger than {limit} bytes",
        request_id=scope.get("state", {}).get("request_id"),
        headers=[(b"connection", b"close")],
    )
