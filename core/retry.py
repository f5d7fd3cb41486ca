"""The one reconnect/retry helper: capped exponential backoff with full jitter, for listed transient errors only."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from core.logging import get_logger

T = TypeVar("T")
log = get_logger("shopfloor.retry")


@dataclass(frozen=True)
class Backoff:
    """Delays grow as base * 2^attempt up to cap; each wait is uniform in [0, that] (full jitter)."""

    base_s: float = 0.2
    cap_s: float = 15.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0-based)."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))  # noqa: S311 -- jitter, not crypto


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...],
    backoff: Backoff,
    what: str,
    stop: asyncio.Event | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `operation` until it succeeds; transient errors wait and retry, anything else propagates.

    CancelledError is never caught. With `stop` set, the error in hand is raised instead of waiting again.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except transient as error:
            if on_error is not None:
                on_error(error)
            if stop is not None and stop.is_set():
                raise
            delay = backoff.delay(attempt)
            log.warning("retrying", what=what, attempt=attempt + 1, delay_s=round(delay, 2), error=repr(error)[:300])
            attempt += 1
            if stop is None:
                await asyncio.sleep(delay)
            else:
                await wait_or_stop(stop, delay)


async def keep_connected(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    transient: tuple[type[BaseException], ...],
    backoff: Backoff,
    stop: asyncio.Event,
    event: str,
    on_error: Callable[[BaseException], Awaitable[None] | None] | None = None,
    quiet: bool = False,
    **context: object,
) -> None:
    """Run `session` again and again until `stop` is set: the reconnect loop of every long-lived connection.

    `session` gets a `healthy()` callback to call once its connection works, which resets the backoff. A transient
    error is logged as `event` (with `context`), handed to `on_error`, and waited out with capped, jittered
    backoff (or until `stop`); any other exception propagates to the caller's task group. CancelledError is
    never caught. `quiet`: each error is logged at DEBUG only, for callers whose `on_error` reports an outage once
    (a broker that is down for an hour must not print a warning per attempt).
    """
    attempt = 0

    def healthy() -> None:
        nonlocal attempt
        attempt = 0

    while not stop.is_set():
        try:
            await session(healthy)
        except transient as error:
            if on_error is not None:
                outcome = on_error(error)
                if outcome is not None:
                    await outcome
            delay = backoff.delay(attempt)
            attempt += 1
            report = log.debug if quiet else log.warning
            report(event, error=repr(error)[:300], attempt=attempt, retry_in_s=round(delay, 2), **context)
            await wait_or_stop(stop, delay)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile.

    `asyncio.timeout`, never `asyncio.wait_for`, around waits that a cancellation may race: on Python 3.11,
    wait_for returns the inner result and drops the cancellation when both happen at once, and the task then
    never stops (a gateway that hung on shutdown under load). Everything long-running here follows that rule.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
