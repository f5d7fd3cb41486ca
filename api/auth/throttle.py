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
import contextlib
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

# The longest an attempt queues behind others on a slowed-down username before it is refused with 429 instead.
MAX_QUEUE_WAIT_S = 30.0
# Rows older than the longest window are deleted every this many reservations.
PRUNE_EVERY = 200


@dataclass(frozen=True)
class Limit:
    """At most `max_attempts` rows under `key` within the last `window_s` seconds (None: counted, not limited)."""

    key: str
    max_attempts: int | None
    window_s: float


@dataclass(frozen=True)
class Spacing:
    """Past `after` attempts under `key` within `window_s`, the next attempts under it are queued `interval_s` apart:
    each waits for its turn (slowed down, not refused), and only a queue longer than MAX_QUEUE_WAIT_S gets 429."""

    key: str
    after: int
    window_s: float
    interval_s: float


@dataclass(frozen=True)
class Reservation:
    """The rows one attempt added, to take back when it turns out good, and how long it must wait for its turn."""

    ids: tuple[int, ...]
    wait_s: float = 0.0


class AttemptLedger:
    """Reserves, counts and releases attempts in `auth_attempt`."""

    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]], *, longest_window_s: float):
        # Looked up at each use: tests bind the app's requests to their own connection after the app is built.
        self._sessions = sessions
        self._lock = asyncio.Lock()
        self._longest_window = timedelta(seconds=longest_window_s)
        self._reservations = 0

    async def reserve(self, limits: Sequence[Limit], *, message: str, spacing: Spacing | None = None) -> Reservation:
        """Count one attempt under every key; RateLimited (nothing counted) when any limit is already reached.

        With `spacing`, the attempt's row under that key is dated at its turn in the queue (`wait_s` from now).
        """
        sessions = self._sessions()
        postgres = sessions.kw["bind"].dialect.name == "postgresql"
        # PostgreSQL: advisory locks per key serialise the check-and-count across processes, and keys that do not
        # meet do not wait for each other. SQLite has one writer and no such locks: one reservation at a time.
        serial = contextlib.nullcontext() if postgres else self._lock
        async with serial, transaction(sessions) as session:
            if postgres:
                for key in sorted({limit.key for limit in limits}):  # one order everywhere: no deadlock
                    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
            now = utcnow()
            waits = [await self._wait(session, limit, now) for limit in limits if limit.max_attempts is not None]
            retry_after = max(waits, default=0.0)
            if retry_after > 0:
                raise RateLimited(message, retry_after_s=max(1, math.ceil(retry_after)))
            turn = await self._turn(session, spacing, now) if spacing is not None else now
            if (turn - now).total_seconds() > MAX_QUEUE_WAIT_S:
                raise RateLimited(message, retry_after_s=math.ceil((turn - now).total_seconds() - MAX_QUEUE_WAIT_S))
            rows = [
                {"key": limit.key, "at": turn if spacing is not None and limit.key == spacing.key else now}
                for limit in limits
            ]
            ids = (await session.scalars(insert(AuthAttempt).returning(AuthAttempt.id), rows)).all()
            self._reservations += 1
            if self._reservations % PRUNE_EVERY == 0:
                await session.execute(delete(AuthAttempt).where(AuthAttempt.at < now - self._longest_window))
        return Reservation(tuple(ids), wait_s=(turn - now).total_seconds())

    @staticmethod
    async def _turn(session: AsyncSession, spacing: Spacing, now: datetime) -> datetime:
        """When an attempt under `spacing.key` may run: now, or `interval_s` after the last one queued."""
        counted, newest = (
            await session.execute(
                select(func.count(), func.max(AuthAttempt.at)).where(
                    AuthAttempt.key == spacing.key, AuthAttempt.at > now - timedelta(seconds=spacing.window_s)
                )
            )
        ).one()
        if counted < spacing.after or newest is None:
            return now
        return max(now, newest + timedelta(seconds=spacing.interval_s))

    async def release(self, reservation: Reservation, *, clear: Sequence[str] = ()) -> None:
        """Take an attempt back (it was good), and forget every earlier attempt under the `clear` keys."""
        async with transaction(self._sessions()) as session:
            await session.execute(delete(AuthAttempt).where(AuthAttempt.id.in_(reservation.ids)))
            if clear:
                await session.execute(delete(AuthAttempt).where(AuthAttempt.key.in_(clear)))

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
        """Reserve one login attempt. When the username is under attack from everywhere, attempts on it are queued
        LOGIN_SLOWDOWN_S apart (however many arrive at once) and this one waits for its turn."""
        pair, origin, user = self._keys(username, address)
        reservation = await self.ledger.reserve(
            [
                Limit(pair, self.limits.per_user_and_address, self.limits.window_s),
                Limit(origin, self.limits.per_address, self.limits.window_s),
                Limit(user, None, self.limits.window_s),
            ],
            message="Too many failed login attempts; try again later",
            spacing=Spacing(user, self.limits.slowdown_after, self.limits.window_s, self.limits.slowdown_s),
        )
        if reservation.wait_s > 0:
            log.warning("login_slowed_down", username=username, client=address, wait_s=round(reservation.wait_s, 2))
            await asyncio.sleep(reservation.wait_s)
        return reservation

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
