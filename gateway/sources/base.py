"""What every device source gives the gateway: batches of tag values with their source time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

from core.contract import Quality


@dataclass(frozen=True)
class TagValue:
    """One value of one tag. Numbers and booleans go to readings; the state tag carries a state name.

    `quality` None is good; a bad value the device could not give (a failed read) has `value` None.
    """

    tag: str
    value: float | bool | str | None
    ts: datetime
    quality: Quality | None = None


class SourceError(Exception):
    """A device could not be reached or answered with an error; the supervisor reconnects with backoff."""


# A device that cannot be reached or answers badly (each source wraps its library's errors in SourceError), and the
# network under it: the supervisor reconnects with backoff. Anything else is a bug and fails the gateway.
TRANSIENT_DEVICE_ERRORS: tuple[type[BaseException], ...] = (SourceError, OSError, TimeoutError)


class Source(Protocol):
    """A connection to one device.

    `values()` yields one list per poll (polling) or per data-change notification (subscriptions), until the
    connection fails (SourceError or the library's connection errors) or the task is cancelled. Entering the
    context connects; leaving it disconnects.
    """

    async def __aenter__(self) -> Source: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def values(self) -> AsyncIterator[list[TagValue]]: ...
