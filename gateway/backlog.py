"""The disk buffer's backlog as operators see it: depth, age, bytes, and how long until the bound starts dropping.

Pure: the gateway feeds it the buffer's figures and its own running totals of bytes appended and acknowledged,
and reads the figures for the Prometheus gauges and for the retained gateway status message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.buffer import BufferStats

# The growth rate is an exponentially weighted average with this time constant: a minute-long outage shows a
# steady estimate within seconds, and a short burst does not swing it much.
GROWTH_TAU_S = 10.0


@dataclass(frozen=True)
class Backlog:
    """One reading of the backlog; `seconds_to_full` is +inf when the buffer is not growing."""

    messages: int
    readings: int
    oldest_age_s: float
    bytes: int
    max_bytes: int
    seconds_to_full: float

    def as_status(self) -> dict[str, Any]:
        """The `backlog` object of the gateway status message (JSON has no infinity: null when not growing)."""
        return {
            "messages": self.messages,
            "readings": self.readings,
            "oldest_age_s": round(self.oldest_age_s, 1),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "seconds_to_full": None if math.isinf(self.seconds_to_full) else round(self.seconds_to_full, 1),
        }

    @property
    def waiting(self) -> bool:
        """Something has waited in the buffer for a second or more (a backlog, not a message in flight)."""
        return self.messages > 0 and self.oldest_age_s >= 1.0


EMPTY = Backlog(0, 0, 0.0, 0, 0, math.inf)


class BacklogMeter:
    """Turns successive buffer figures into a `Backlog`, with an EWMA of the buffer's net growth.

    Growth is bytes appended minus bytes acknowledged per second (the gateway's own totals), not the change of the
    file's size: once the bound drops the oldest the size stops growing, but the buffer is still losing ground.
    The time to full counts against both bounds, bytes and messages, whichever comes first.
    """

    def __init__(self, *, max_bytes: int, max_messages: int, tau_s: float = GROWTH_TAU_S) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.tau_s = tau_s
        self.bytes_per_s = 0.0
        self.messages_per_s = 0.0
        self._last: tuple[float, int, int, int, int] | None = None

    def update(
        self,
        stats: BufferStats,
        *,
        now: float,
        wall_now: float,
        appended_bytes: int,
        acked_bytes: int,
        appended_messages: int,
        acked_messages: int,
    ) -> Backlog:
        """The backlog at `now` (monotonic seconds; `wall_now` is the clock the buffer's created_at uses)."""
        if self._last is not None:
            then, bytes_in, bytes_out, messages_in, messages_out = self._last
            elapsed = now - then
            if elapsed > 0:
                weight = 1 - math.exp(-elapsed / self.tau_s)
                growth = ((appended_bytes - bytes_in) - (acked_bytes - bytes_out)) / elapsed
                count_growth = ((appended_messages - messages_in) - (acked_messages - messages_out)) / elapsed
                self.bytes_per_s += weight * (growth - self.bytes_per_s)
                self.messages_per_s += weight * (count_growth - self.messages_per_s)
        self._last = (now, appended_bytes, acked_bytes, appended_messages, acked_messages)
        age = stats.oldest_age_s(wall_now)
        return Backlog(
            stats.messages, stats.readings, age, stats.bytes, self.max_bytes, self.seconds_to_full(stats, age)
        )

    def seconds_to_full(self, stats: BufferStats, oldest_age_s: float) -> float:
        """Seconds until a bound is reached at the current growth; +inf when the buffer is not growing."""
        # Without a backlog (nothing has waited a second) the buffer only holds messages in flight: the average's
        # leftovers and the jitter of sampling mid-round are not growth.
        if stats.messages == 0 or oldest_age_s < 1.0:
            return math.inf
        left = math.inf
        if self.bytes_per_s > 0:
            left = min(left, max(self.max_bytes - stats.bytes, 0) / self.bytes_per_s)
        if self.messages_per_s > 0:
            left = min(left, max(self.max_messages - stats.messages, 0) / self.messages_per_s)
        return left
