"""Throttling of logins and registrations: attempts counted in the database before any password is hashed.

An attempt is **reserved** (a row in `auth_attempt` under each of its keys) before the password is verified, in a
short transaction of its own, so N parallel guesses cost at most the limit in verifications: the others find the
limit reached and get 429. A good password takes its reservation back. The rows live in the database, so every
API process on it shares the limits (two replicas behind a load balancer do not double them); on PostgreSQL an
advisory lock per key serialises the check-and-insert across processes, and within a process an asyncio lock
does (SQLite has only the one process).

Keys: a login counts for the username *at this address* (someone guessing from elsewhere never locks the user out
at their own address) and for the address (over every username); the username alone is not limited, but past
a much higher count each attempt on it waits first (slowed down, never locked out).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import utcnow
from core.db import transaction
from core.errors import RateLimited
from core.logging import get_logger
from core.models import AuthAttempt

log = get_logger("shopfloor.auth")

# Rows older than the longest window are deleted every this many reservations.
PRUNE_EVERY = 200


@dataclass(frozen=True)
class Limit:
    """At most `max_attempts` rows under `key` within the last `window_s` seconds (None: counted, not limited)."""

    key: str
    max_attempts: int | None
    window_s: float


@dataclass(frozen=True)
class Reservation:
    """The rows one attempt added, to take back when it turns out good."""

    ids: tuple[int, ...]


class AttemptLedger:
    """Reserves, counts and releases attempts in `auth_attempt`."""

    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]], *, longest_window_s: float):
        # Looked up at each use: tests bind the app's requests to their own connection after the app is built.
        self._sessions = sessions
        self._lock = asyncio.Lock()
        self._longest_window = timedelta(seconds=longest_window_s)
        self._reservations = 0

    async def reserve(self, limits: Sequence[Limit], *, message: str) -> Reservation:
        """Count one attempt under every key; RateLimited (nothing counted) when any limit is already reached."""
        async with self._lock, transaction(self._sessions()) as session:
            if session.get_bind().dialect.name == "postgresql":
                for key in sorted({limit.key for limit in limits}):  # one order everywhere: no deadlock
                    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
            now = utcnow()
            waits = [await self._wait(session, limit, now) for limit in limits if limit.max_attempts is not None]
            retry_after = max(waits, default=0.0)
            if retry_after > 0:
                raise RateLimited(message, retry_after_s=max(1, math.ceil(retry_after)))
            rows = [{"key": limit.key, "at": now} for limit in limits]
            ids = (await session.scalars(insert(AuthAttempt).returning(AuthAttempt.id), rows)).all()
            self._reservations += 1
            if self._reservations % PRUNE_EVERY == 0:
                await session.execute(delete(AuthAttempt).where(AuthAttempt.at < now - self._longest_window))
        return Reservation(tuple(ids))

    async def release(self, reservation: Reservation, *, clear: Sequence[str] = ()) -> None:
        """Take an attempt back (it was good), and forget every earlier attempt under the `clear` keys."""
        async with transaction(self._sessions()) as session:
            await session.execute(delete(AuthAttempt).where(AuthAttempt.id.in_(reservation.ids)))
            if clear:
                await session.execute(delete(AuthAttempt).where(AuthAttempt.key.in_(clear)))

    async def count(self, key: str, window_s: float) -> int:
        """Attempts under `key` within the window."""
        async with transaction(self._sessions()) as session:
            since = utcnow() - timedelta(seconds=window_s)
            counted = await session.scalar(
                select(func.count()).select_from(AuthAttempt).where(AuthAttempt.key == key, AuthAttempt.at > since)
            )
        return int(counted or 0)

    @staticmethod
    async def _wait(session: AsyncSession, limit: Limit, now: datetime) -> float:
        assert limit.max_attempts is not None  # noqa: S101 -- filtered by the caller
        window = timedelta(seconds=limit.window_s)
        recent = (
            await session.scalars(
                select(AuthAttempt.at)
                .where(AuthAttempt.key == limit.key, AuthAttempt.at > now - window)
                .order_by(AuthAttempt.at.desc())
                .limit(limit.max_attempts)
            )
        ).all()
        if len(recent) < limit.max_attempts:
            return 0.0
        # Free again when the oldest of the last `max_attempts` leaves the window.
        return (recent[-1] + window - now).total_seconds()


@dataclass(frozen=True)
class LoginLimits:
    """The login and registration limits of AuthSettings."""

    per_user_and_address: int
    per_address: int
    window_s: float
    slowdown_after: int
    slowdown_s: float
    registrations_per_address: int
    registration_window_s: float


class LoginThrottle:
    """The login and registration rules on top of an AttemptLedger."""

    def __init__(self, ledger: AttemptLedger, limits: LoginLimits):
        self.ledger = ledger
        self.limits = limits

    @staticmethod
    def _keys(username: str, address: str | None) -> tuple[str, str, str]:
        where = address or "unknown"
        return f"login:{username}@{where}", f"login-from:{where}", f"login-user:{username}"

    async def begin_login(self, *, username: str, address: str | None) -> Reservation:
        """Reserve one login attempt (slowed down first when the username is under attack from everywhere)."""
        pair, origin, user = self._keys(username, address)
        failures = await self.ledger.count(user, self.limits.window_s)
        if failures >= self.limits.slowdown_after:
            log.warning("login_slowed_down", username=username, client=address, failures=failures)
            await asyncio.sleep(self.limits.slowdown_s)
        return await self.ledger.reserve(
            [
                Limit(pair, self.limits.per_user_and_address, self.limits.window_s),
                Limit(origin, self.limits.per_address, self.limits.window_s),
                Limit(user, None, self.limits.window_s),
            ],
            message="Too many failed login attempts; try again later",
        )

    async def login_succeeded(self, reservation: Reservation, *, username: str, address: str | None) -> None:
        """A good password: the attempt is not a failure, and the username's failures at this address are forgotten."""
        pair, _, _ = self._keys(username, address)
        await self.ledger.release(reservation, clear=[pair])

    async def begin_registration(self, *, address: str | None) -> None:
        """Count one registration from this address (each costs a password hash); 429 past the limit."""
        await self.ledger.reserve(
            [
                Limit(
                    f"register-from:{address or 'unknown'}",
                    self.limits.registrations_per_address,
                    self.limits.registration_window_s,
                )
            ],
            message="Too many registrations from this address; try again later",
        )
