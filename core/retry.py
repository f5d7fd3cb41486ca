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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
