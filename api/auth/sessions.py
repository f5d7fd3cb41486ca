"""Sessions: a login is an access token (short) plus a refresh token (one family per login, rotated at each use).

- `POST /auth/refresh` trades a refresh token for a new access token and the family's next refresh token; the old
  one is marked used. A used or revoked token presented again means it was copied: the whole family is revoked,
  so whoever holds the newer token is signed out too (RFC 9700 §4.14.2, refresh token rotation).
- `POST /auth/logout` revokes the family of the refresh token it is given.
- `revoke_everything` bumps the user's token version (every access token issued before stops working at its next
  request in this API process, and within AUTH_USER_CACHE_S in the others: `api.auth.cache`) and revokes all the
  user's refresh tokens: on password change or reset, deactivation and role change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as OrmSession

from api.auth.cache import forget_user_everywhere
from core.errors import Unauthenticated
from core.logging import get_logger
from core.models import RefreshToken, UserAccount
from core.security import TokenService, new_secret, secret_digest

log = get_logger("shopfloor.auth")


@dataclass(frozen=True)
class IssuedSession:
    """What a login or a refresh hands out."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


async def start_session(
    session: AsyncSession, *, tokens: TokenService, user: UserAccount, now: datetime, refresh_ttl_s: int
) -> IssuedSession:
    """A new family: an access token and the family's first refresh token."""
    return await _issue(
        session,
        tokens=tokens,
        user=user,
        family=new_secret()[:32],
        now=now,
        expires_at=now + timedelta(seconds=refresh_ttl_s),
    )


async def refresh_session(
    session: AsyncSession, *, tokens: TokenService, presented: str, now: datetime
) -> tuple[UserAccount, IssuedSession] | None:
    """The user and the next access and refresh tokens of the presented token's family.

    None when the token was already used: the family is revoked now, and the caller commits that before it refuses
    the request (a rolled-back revocation would leave the copied token working). The next token keeps the family's
    deadline, so one login lasts REFRESH_TOKEN_TTL_S however often it is renewed.

    Races are settled by the rows, not by locks (SQLite has none): the token is used up by a conditional UPDATE, so
    of two parallel uses one is a reuse; and a token carries the user's token version when it was issued, so one
    issued while a password reset was committing is refused at its first use.
    """
    row = await _find(session, presented)
    if row is None:
        raise Unauthenticated("The refresh token is invalid", code="invalid_refresh_token")
    if row.revoked_at is not None and row.used_at is None:
        raise Unauthenticated("The login was ended; log in again", code="refresh_token_revoked")
    if row.expires_at <= now:
        raise Unauthenticated("The refresh token has expired; log in again", code="refresh_token_expired")
    used = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
        await _revoke_family(session, row.family, now)
        log.warning("refresh_token_reused", user_id=row.user_id, family=row.family[:8])
        return None
    user = await session.get(UserAccount, row.user_id)
    if user is None or not user.is_active or user.token_version != row.token_version:
        await _revoke_family(session, row.family, now)
        raise Unauthenticated("The login was ended; log in again", code="refresh_token_revoked")
    issued = await _issue(session, tokens=tokens, user=user, family=row.family, now=now, expires_at=row.expires_at)
    return user, issued


async def end_session(session: AsyncSession, *, presented: str, now: datetime) -> int | None:
    """Revoke the presented refresh token's family; the user id, or None for an unknown token."""
    row = await _find(session, presented)
    if row is None:
        return None
    await _revoke_family(session, row.family, now)
    return row.user_id


# Users whose token version a session's transaction bumps: forgotten by every principal cache once it commits.
_FORGET_AFTER_COMMIT = "shopfloor.forget_after_commit"


@event.listens_for(OrmSession, "after_commit")
def _forget_committed(session: OrmSession) -> None:
    for user_id in session.info.pop(_FORGET_AFTER_COMMIT, ()):
        forget_user_everywhere(user_id)


@event.listens_for(OrmSession, "after_rollback")
def _nothing_to_forget(session: OrmSession) -> None:
    session.info.pop(_FORGET_AFTER_COMMIT, None)


async def revoke_everything(session: AsyncSession, *, user: UserAccount, now: datetime) -> None:
    """Every token of this user stops working: access tokens at their next request, refresh tokens at once."""
    user.token_version += 1
    # Forgotten now, and again once committed: a request that read the old row in between must not stay cached.
    forget_user_everywhere(user.id)
    session.info.setdefault(_FORGET_AFTER_COMMIT, set()).add(user.id)
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.flush()


async def _issue(
    session: AsyncSession, *, tokens: TokenService, user: UserAccount, family: str, now: datetime, expires_at: datetime
) -> IssuedSession:
    access = tokens.issue(user_id=user.id, role=user.role, now=now, version=user.token_version)
    refresh = new_secret()
    session.add(
        RefreshToken(
            user_id=user.id,
            family=family,
            token_hash=secret_digest(refresh),
            token_version=user.token_version,
            issued_at=now,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return IssuedSession(
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh,
        refresh_expires_in=max(0, int((expires_at - now).total_seconds())),
    )


async def _find(session: AsyncSession, presented: str) -> RefreshToken | None:
    return await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == secret_digest(presented)))


async def _revoke_family(session: AsyncSession, family: str, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
