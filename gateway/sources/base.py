"""What every device source gives the gateway: batches of tag values with their source time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol


@dataclass(frozen=True)
class TagValue:
    """One value of one tag. Numbers and booleans go to readings; the state tag carries a state name."""

    tag: str
    value: float | bool | str
    ts: datetime


class SourceError(Exception):
    """A device could not be reached or answered with an error; the supervisor reconnects with backoff."""


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
