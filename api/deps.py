"""Typed dependencies: the request's session and transaction, settings, and the acting user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.throttle import LoginThrottle
from api.context import AppContext, context_of
from core.db import transaction
from core.errors import Forbidden, Unauthenticated
from core.models import Role, UserAccount
from core.security import InvalidToken, PasswordHasher, Principal, TokenService
from core.settings import ApiProcessSettings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


def get_context(request: Request) -> AppContext:
    """The resources of the app serving this request (built once in `create_app`)."""
    return context_of(request.app)


Context = Annotated[AppContext, Depends(get_context)]


def get_settings(context: Context) -> ApiProcessSettings:
    """The settings the app was built with."""
    return context.settings


READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request, context: Context) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request: committed on success, rolled back on any error. A request that
    only reads (GET, HEAD) on PostgreSQL gets an autocommit session instead: no BEGIN and COMMIT round trips."""
    if request.method in READ_METHODS and context.read_session_factory is not None:
        async with context.read_session_factory() as session:
            yield session
        return
    async with context.session_factory() as session, session.begin():
        yield session


def get_tokens(context: Context) -> TokenService:
    """The token service of this app."""
    return context.tokens


def get_hasher(context: Context) -> PasswordHasher:
    """The password hasher of this app."""
    return context.hasher


def current_time(context: Context) -> datetime:
    """Now, from the app's clock (tests replace it to follow a shift minute by minute)."""
    return context.clock()


def get_throttle(context: Context) -> LoginThrottle:
    """The login throttle of this app (per process)."""
    return context.login_throttle


# scope="function" ends the transaction before the response is sent, so a failed commit is a 500,
# never a 2xx for data that was not stored.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
Settings = Annotated[ApiProcessSettings, Depends(get_settings)]
Tokens = Annotated[TokenService, Depends(get_tokens)]
Hasher = Annotated[PasswordHasher, Depends(get_hasher)]
Throttle = Annotated[LoginThrottle, Depends(get_throttle)]
Now = Annotated[datetime, Depends(current_time)]


async def current_principal(
    request: Request, session: Session, tokens: Tokens, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    """The user behind the bearer token, reloaded (at most every AUTH_USER_CACHE_S per token, see `api.auth.cache`)
    so a role change or deactivation applies.

    A token issued before the user's last password change, reset, deactivation or role change (an older token
    version) is refused like an expired one.
    """
    return await _principal(request, session, tokens, token)


async def detached_principal(
    request: Request, context: Context, tokens: Tokens, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    """`current_principal`, read in a short transaction of its own: for routes that call the login throttle (which
    commits on a connection of its own) before they write, so no request ever holds two pooled connections."""
    async with transaction(context.session_factory) as session:
        return await _principal(request, session, tokens, token)


async def _principal(request: Request, session: AsyncSession, tokens: TokenService, token: str | None) -> Principal:
    if not token:
        raise Unauthenticated("A bearer token is required")
    try:
        claims = tokens.verify(token)  # the expiry and signature are checked on every request, cached or not
    except InvalidToken:
        raise Unauthenticated("The token is invalid or has expired") from None
    cache = context_of(request.app).principals
    principal = cache.get(token)
    if principal is None:
        generation = cache.generation  # before the read: a revocation meanwhile keeps this read out of the cache
        user = await session.get(UserAccount, claims.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("The token's user does not exist or is deactivated")
        if user.token_version != claims.version:
            raise Unauthenticated("The token was revoked; log in again", code="token_revoked")
        principal = Principal(user_id=user.id, username=user.username, role=user.role, token_version=user.token_version)
        cache.put(token, principal, generation=generation)
    request.state.user_id = principal.user_id
    structlog.contextvars.bind_contextvars(user_id=principal.user_id)
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
DetachedUser = Annotated[Principal, Depends(detached_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets only these roles through (403 for the others)."""
    allowed = frozenset(roles)

    async def dependency(principal: CurrentUser) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"This action needs the role {' or '.join(sorted(allowed))}")
        return principal

    return dependency


AdminUser = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
PlannerUser = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.PLANNER))]
