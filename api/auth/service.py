"""Logging in and self-registration."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth.sessions import revoke_everything
from api.auth.throttle import LoginThrottle
from api.users.service import check_password_policy, create_user
from core.db import transaction
from core.errors import Conflict, Forbidden, RateLimited, Unauthenticated
from core.logging import get_logger
from core.models import Role, UserAccount
from core.security import PasswordHasher

log = get_logger("shopfloor.auth")


async def authenticate(
    session: AsyncSession,
    *,
    lookups: async_sessionmaker[AsyncSession],
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    username: str,
    password: str,
    address: str | None,
    now: datetime,
) -> UserAccount:
    """The active user with these credentials; every attempt is logged, never the password.

    The attempt is counted before the password is verified (api.auth.throttle) and taken back when it was good.
    The throttle commits on its own connection, so this request's `session` is first used only once the throttle is
    done, and the user is looked up in a short transaction of `lookups`: a login never holds two pooled connections
    at once (as many parallel logins as the pool holds would otherwise wait for each other until the pool timeout).
    """
    try:
        reservation = await throttle.begin_login(username=username, address=address)
    except RateLimited:
        log.warning("login_throttled", username=username, client=address)
        raise
    async with transaction(lookups) as lookup:
        found = await lookup.scalar(select(UserAccount).where(UserAccount.username == username))
    password_hash = found.password_hash if found is not None else None
    valid = await hasher.verify_async(password_hash, password)
    if found is None or not valid or not found.is_active:
        reason = "unknown_user" if found is None else ("bad_password" if not valid else "inactive")
        log.warning("login_failed", username=username, client=address, reason=reason)
        raise Unauthenticated("Invalid username or password", code="invalid_credentials")
    await throttle.login_succeeded(reservation, username=username, address=address)
    # An imported or weaker hash is upgraded; hashed before the row is locked (hashes wait their turn).
    upgraded = await hasher.hash_async(password) if hasher.needs_rehash(found.password_hash) else None
    user = await session.get(UserAccount, found.id, with_for_update=True)
    # Removed, deactivated, or its password changed (reset, changed) while this one was being checked: the password
    # checked is no longer the user's, and a session made now would carry the new token version.
    if user is None or not user.is_active or user.password_hash != found.password_hash:
        raise Unauthenticated("Invalid username or password", code="invalid_credentials")
    if upgraded is not None:
        user.password_hash = upgraded
    user.last_login_at = now
    await session.flush()
    log.info("login_succeeded", username=username, client=address, user_id=user.id)
    return user


async def register(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    address: str | None,
    allowed: bool,
    username: str,
    password: str,
    full_name: str | None,
    min_password_length: int,
) -> UserAccount:
    """Create a worker account for whoever asks, when self-registration is on."""
    if not allowed:
        raise Forbidden("Self-registration is turned off; ask an admin for an account", code="registration_disabled")
    await throttle.begin_registration(address=address)
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


async def change_own_password(
    session: AsyncSession,
    *,
    lookups: async_sessionmaker[AsyncSession],
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    user_id: int,
    username: str,
    address: str | None,
    current: str,
    new: str,
    min_password_length: int,
    now: datetime,
) -> None:
    """Check the current password (throttled like a login: a stolen access token must not become a way to guess
    it), store the new one, and end every session of the user. The hash is checked before the user row is locked."""
    reservation = await throttle.begin_login(username=username, address=address)
    async with transaction(lookups) as lookup:
        found = await lookup.get(UserAccount, user_id)
    if found is None or not await hasher.verify_async(found.password_hash, current):
        log.warning("password_change_refused", user_id=user_id, client=address)
        raise Forbidden("The current password is wrong", code="wrong_password")
    await throttle.login_succeeded(reservation, username=username, address=address)
    check_password_policy(new, min_length=min_password_length, field="new_password")
    new_hash = await hasher.hash_async(new)  # before the row is locked: hashes wait their turn
    user = await session.get(UserAccount, user_id, with_for_update=True)
    if user is None or user.password_hash != found.password_hash:  # changed meanwhile: start again
        raise Conflict("The password was changed meanwhile; log in again", code="password_changed")
    user.password_hash = new_hash
    await revoke_everything(session, user=user, now=now)
    log.info("password_changed", user_id=user.id)
