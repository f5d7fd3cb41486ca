"""Security headers on every response, and the Content-Security-Policy of the pages the API serves itself."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def page_policy(*script_sources: str) -> str:
    """The CSP of a page served by the API (/ui, /api-docs): its own files only, plus the given script sources."""
    return "; ".join(
        (
            "default-src 'none'",
            " ".join(("script-src 'self'", *script_sources)),
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


# A JSON answer loads nothing and is never framed; the pages set their own policy, which wins.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
DEFAULT_HEADERS = {
    "Content-Security-Policy": API_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Tokens and everything read with one stay out of browser and proxy caches; the static files of /ui and
    # /api-docs say how they may be cached.
    "Cache-Control": "no-store",
}
_DEFAULTS = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in DEFAULT_HEADERS.items()]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware: adds each of DEFAULT_HEADERS that the response does not set itself."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request (other scopes pass straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in _DEFAULTS if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
