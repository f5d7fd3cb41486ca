"""Stream tickets: short-lived, single-use credentials for opening one live stream with `?ticket=`.

A browser's EventSource cannot send an Authorization header, and a token in the URL is kept by proxies, server logs
and browser history. So a client asks `POST /machines/{id}/stream/ticket` (with its bearer header) for a ticket and
opens `/machines/{id}/stream?ticket=…` at once. Only the ticket's SHA-256 is stored; it lives STREAM_TICKET_TTL_S
seconds (at most 60), and the first use burns it, so a ticket copied from a URL afterwards opens nothing. The ticket
keeps the user's token version: a password reset, deactivation or role change voids it, and ends the stream it
opened at the next heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.machines.service import get_machine
from core.errors import Unauthenticated
from core.models import StreamTicket, UserAccount
from core.security import Principal, new_secret, secret_digest


@dataclass(frozen=True)
class IssuedTicket:
    """A new ticket (shown only in this answer) and how long it may wait before it is used."""

    ticket: str
    expires_in: int


@dataclass(frozen=True)
class TicketGrant:
    """What a burnt ticket says: whose it was, and their token version when it was made."""

    user_id: int
    token_version: int


async def issue_ticket(
    session: AsyncSession, *, actor: Principal, machine_id: int, now: datetime, ttl_s: int
) -> IssuedTicket:
    """A ticket for one stream of the actor (NotFound for an unknown machine); expired tickets are deleted."""
    await get_machine(session, machine_id=machine_id)
    await session.execute(
        delete(StreamTicket).where(StreamTicket.expires_at <= now).execution_options(synchronize_session=False)
    )
    ticket = new_secret()
    session.add(
        StreamTicket(
            ticket_hash=secret_digest(ticket),
            user_id=actor.user_id,
            # The version the request's token was checked against, not the row's now: a ticket asked for with a
            # token revoked meanwhile (its principal still cached) is refused when it is redeemed.
            token_version=actor.token_version,
            expires_at=now + timedelta(seconds=ttl_s),
        )
    )
    await session.flush()
    return IssuedTicket(ticket=ticket, expires_in=ttl_s)


async def redeem_ticket(session: AsyncSession, *, ticket: str, now: datetime) -> TicketGrant:
    """Burn the ticket and say whose it was; Unauthenticated when it is unknown, used or expired.

    One UPDATE … WHERE used_at IS NULL marks it used, so of two requests racing with one ticket exactly one gets a
    row back (on PostgreSQL the second waits for the first's row lock, then finds it used). The caller commits at
    once, in a transaction of its own: the ticket is spent even when the stream is then refused.
    """
    burnt = (
        await session.execute(
            update(StreamTicket)
            .where(
                StreamTicket.ticket_hash == secret_digest(ticket),
                StreamTicket.used_at.is_(None),
                StreamTicket.expires_at > now,
            )
            .values(used_at=now)
            .returning(StreamTicket.user_id, StreamTicket.token_version)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if burnt is None:
        raise Unauthenticated(
            "The stream ticket is unknown, used or expired: ask POST /machines/{machine_id}/stream/ticket for a new "
            "one and open the stream with it at once",
            code="invalid_ticket",
        )
    user_id, token_version = burnt
    return TicketGrant(user_id=user_id, token_version=token_version)


async def ticket_holder(session: AsyncSession, *, grant: TicketGrant) -> UserAccount:
    """The user a burnt ticket was made for; Unauthenticated when they were deactivated or signed out everywhere
    (a newer token version) since."""
    user = await session.get(UserAccount, grant.user_id)
    if user is None or not user.is_active or user.token_version != grant.token_version:
        raise Unauthenticated("The ticket's user is deactivated or was signed out since", code="invalid_ticket")
    return user
