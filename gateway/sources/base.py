"""What every device source gives the gateway: batches of tag values with their source time, and writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, runtime_checkable

from core.commands import WriteValue
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


class WriteRefused(Exception):
    """The device cannot hold this value in this tag (its data type or scaling); nothing was written."""


class WriteFailed(SourceError):
    """A write went wrong on the device; `previous` is the value read before it, when that read succeeded."""

    def __init__(self, message: str, *, previous: WriteValue | None = None) -> None:
        super().__init__(message)
        self.previous = previous


@dataclass(frozen=True)
class Written:
    """One tag written: the value read just before, and the value read back just after."""

    previous: WriteValue | None
    read_back: WriteValue


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


@runtime_checkable
class WritableSource(Protocol):
    """A source that can also write its device's tags (both protocols' sources do).

    A protocol of its own rather than part of `Source`, so a source that only reads (a test double, a future
    read-only protocol) still is a Source; the gateway answers a command for it `failed`.

    `check_write()` refuses (WriteRefused) a value the device cannot hold in a tag, before anything is written;
    `write()` reads the tag, writes it and reads it back over the source's own connection, one request at a time
    with its polls, and raises WriteFailed (or the library's connection errors) when the device fails.
    """

    def check_write(self, tag: str, value: WriteValue) -> None: ...

    async def write(self, tag: str, value: WriteValue) -> Written: ...
