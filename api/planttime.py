"""Plant time at the API's edge: a datetime sent without an offset is the plant's local time (PLANT_TIMEZONE).

`PlantDateTime` is the one type of every datetime the API takes, in bodies and query parameters alike. The zone
comes from the app that serves the request: `PlantTimeMiddleware` puts it in a context variable for the request,
so apps with different zones can run side by side (tests do). How skipped and repeated local times are read:
`core.planttime`.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator
from starlette.types import ASGIApp, Receive, Scope, Send

from core.planttime import from_local

_ZONE: ContextVar[ZoneInfo | None] = ContextVar("plant_zone", default=None)
# Outside a request (a schema validated by hand): UTC.
_OUTSIDE_REQUESTS = ZoneInfo("UTC")


def plant_zone() -> ZoneInfo:
    """The plant's zone of the app serving this request."""
    return _ZONE.get() or _OUTSIDE_REQUESTS


def _in_plant_time(value: datetime) -> datetime:
    try:
        return from_local(value, plant_zone())
    except OverflowError:  # year 1 or 9999 moved past the calendar's edge by the offset
        raise ValueError("is too close to the first or last representable date") from None


PlantDateTime = Annotated[datetime, AfterValidator(_in_plant_time)]
"""A datetime of a request, as an instant in UTC: with an offset, that instant; without one, the plant's local time."""


class PlantTimeMiddleware:
    """Pure ASGI middleware: the app's plant zone for everything that runs inside the request."""

    def __init__(self, app: ASGIApp, *, zone: ZoneInfo) -> None:
        self.app = app
        self.zone = zone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with this app's zone."""
        token = _ZONE.set(self.zone)
        try:
            await self.app(scope, receive, send)
        finally:
            _ZONE.reset(token)
