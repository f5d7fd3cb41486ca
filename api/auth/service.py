"""Logging in and self-registration."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.throttle import LoginThrottle
from api.users.service import create_user
from core.errors import Forbidden, Unauthenticated
from core.logging import get_logger
from core.models import Role, UserAccount
from core.security import PasswordHasher

log = get_logger("shopfloor.auth")


async def authenticate(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    username: str,
    password: str,
    address: str | None,
    now: datetime,
    monotonic_now: float,
) -> UserAccount:
    """The active user with these credentials; every attempt is logged, never the password."""
    try:
        throttle.check(username=username, address=address, now=monotonic_now)
    except Exception:
        log.warning("login_throttled", username=username, client=address)
        raise
    user = await session.scalar(select(UserAccount).where(UserAccount.username == username))
    password_hash = user.password_hash if user is not None else None
    valid = await asyncio.to_thread(hasher.verify, password_hash, password)
    if user is None or not valid or not user.is_active:
        reason = "unknown_user" if user is None else ("bad_password" if not valid else "inactive")
        throttle.record_failure(username=username, address=address, now=monotonic_now)
        log.warning("login_failed", username=username, client=address, reason=reason)
        raise Unauthenticated("Invalid username or password", code="invalid_credentials")
    throttle.record_success(username=username)
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = await asyncio.to_thread(hasher.hash, password)
    user.last_login_at = now
    await session.flush()
    log.info("login_succeeded", username=username, client=address, user_id=user.id)
    return user


async def register(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    allowed: bool,
    username: str,
    password: str,
    full_name: str | None,
    min_password_length: int,
) -> UserAccount:
    """Create a worker account for whoever asks, when self-registration is on."""
    if not allowed:
        raise Forbidden("Self-registration is turned off; ask an admin for an account", code="registration_disabled")
    user = await create_user(
        session,
        hasher=hasher,
        username=username,
        password=password,
        role=Role.WORKER,
        full_name=full_name,
        min_password_length=min_password_length,
    )
    log.info("user_registered", username=username, user_id=user.id)
    return user
