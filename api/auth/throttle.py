"""Login throttling: too many recent failures for one username or one address → 429 with Retry-After."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from core.errors import RateLimited

# Bounds memory when someone sprays random usernames: the oldest keys are forgotten first.
MAX_TRACKED_KEYS = 100_000


@dataclass(frozen=True)
class ThrottleLimits:
    """How many failures within the window each key may have."""

    per_user: int
    per_address: int
    window_s: float


class LoginThrottle:
    """A sliding window of failure times per key, kept in this process's memory."""

    def __init__(self, limits: ThrottleLimits):
        self._limits = limits
        self._failures: dict[str, deque[float]] = {}

    @property
    def tracked_keys(self) -> int:
        """How many usernames and addresses have failures on record."""
        return len(self._failures)

    def check(self, *, username: str, address: str | None, now: float) -> None:
        """Raise RateLimited when either key is over its limit."""
        waits = [self._wait(f"user:{username}", self._limits.per_user, now)]
        if address:
            waits.append(self._wait(f"addr:{address}", self._limits.per_address, now))
        retry_after = max(waits)
        if retry_after > 0:
            raise RateLimited("Too many failed login attempts; try again later", retry_after_s=math.ceil(retry_after))

    def record_failure(self, *, username: str, address: str | None, now: float) -> None:
        """Count one failed attempt for the username and the address."""
        keys = [f"user:{username}"] + ([f"addr:{address}"] if address else [])
        for key in keys:
            window = self._failures.pop(key, None) or deque()
            window.append(now)
            self._failures[key] = window  # re-inserted last, so the dict stays ordered by recent use
        while len(self._failures) > MAX_TRACKED_KEYS:
            del self._failures[next(iter(self._failures))]

    def record_success(self, *, username: str) -> None:
        """A good password clears the username's failures (the address keeps its count)."""
        self._failures.pop(f"user:{username}", None)

    def _wait(self, key: str, limit: int, now: float) -> float:
        window = self._failures.get(key)
        if not window:
            return 0.0
        horizon = now - self._limits.window_s
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) < limit:
            return 0.0
        return window[-limit] + self._limits.window_s - now
