"""Sessions and abuse limits: refresh tokens (rotated, in families), login and registration attempts, stream tickets.

Secrets (refresh tokens, stream tickets) are stored as their SHA-256 only, like machine API keys.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.models.base import Base


class RefreshToken(Base):
    """One refresh token of a login's family; each use replaces it with the next one of the same family.

    A token presented after it was used means it was copied: the whole family is revoked.
    """

    __tablename__ = "refresh_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The user's token version when it was issued: one issued while a reset was committing is refused at first use.
    token_version: Mapped[int]
    issued_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuthAttempt(Base):
    """One counted attempt (a login not yet known good, a registration) under a throttle key, kept for its window.

    Shared by every API process on the same database, so replicas behind a load balancer share the limits.
    """

    __tablename__ = "auth_attempt"
    __table_args__ = (Index("ix_auth_attempt_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class StreamTicket(Base):
    """A short-lived, single-use credential for one `EventSource` connection (browsers cannot send headers)."""

    __tablename__ = "stream_ticket"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    # The user's token version when the ticket was made: a later bump (password reset, deactivation) voids it.
    token_version: Mapped[int]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
