"""Log in, register, and who am I."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from api.auth import service, sessions
from api.auth.schemas import LoginRequest, PasswordChange, RefreshRequest, RegisterRequest, TokenRead
from api.deps import Context, CurrentUser, DetachedUser, Hasher, Now, Session, Settings, Throttle, Tokens
from api.users.schemas import UserRead
from core.clock import utcnow
from core.db import transaction
from core.errors import Unauthenticated
from core.models import UserAccount

router = APIRouter(prefix="/auth", tags=["auth"])

_LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password"]},
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                    },
                }
            },
            "application/json": {"schema": LoginRequest.model_json_schema()},
        },
    }
}


async def _read_credentials(request: Request) -> LoginRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/json":
            try:
                raw: Any = json.loads(await request.body())
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                raise RequestValidationError(
                    [{"loc": ("body",), "msg": "Body is not valid JSON", "type": "json_invalid"}]
                ) from None
            return LoginRequest.model_validate(raw)
        if content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            form = await request.form()
            return LoginRequest.model_validate({key: form.get(key) for key in ("username", "password")})
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        ) from None
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        "Send the credentials as application/json or application/x-www-form-urlencoded",
    )


@router.post(
    "/login",
    response_model=TokenRead,
    openapi_extra=_LOGIN_BODY,
    responses={
        401: {"description": "Wrong username or password, or a deactivated user (`invalid_credentials`)"},
        415: {"description": "The body is neither JSON nor a form (`unsupported_media_type`)"},
        429: {"description": "Too many failed logins (`rate_limited`, with Retry-After)"},
    },
)
async def login(
    now: Now,
    request: Request,
    session: Session,
    tokens: Tokens,
    hasher: Hasher,
    throttle: Throttle,
    settings: Settings,
    context: Context,
) -> TokenRead:
    """Exchange a username and password for a bearer token (JSON body or the OAuth2 password form)."""
    credentials = await _read_credentials(request)
    user = await service.authenticate(
        session,
        lookups=context.session_factory,
        hasher=hasher,
        throttle=throttle,
        username=credentials.username,
        password=credentials.password,
        address=request.state.client_address,
        now=now,
    )
    request.state.user_id = user.id
    # Tokens are checked against the wall clock, so they are issued by it too (not by the app's clock, which tests
    # may freeze in the past).
    issued = await sessions.start_session(
        session, tokens=tokens, user=user, now=utcnow(), refresh_ttl_s=settings.auth.refresh_token_ttl_s
    )
    return _token_read(issued, user)


def _token_read(issued: sessions.IssuedSession, user: UserAccount) -> TokenRead:
    return TokenRead(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        role=user.role,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
    )


@router.post(
    "/refresh",
    response_model=TokenRead,
    responses={401: {"description": "Unknown, expired or reused refresh token (reuse revokes the whole login)"}},
)
async def refresh(body: RefreshRequest, request: Request, context: Context, tokens: Tokens) -> TokenRead:
    """A new access token and the next refresh token; the one sent is used up. Sending it again ends the login."""
    # Not the request's session: a reused token must leave its family revoked even though the request fails.
    async with transaction(context.session_factory) as session:
        refreshed = await sessions.refresh_session(
            session,
            tokens=tokens,
            presented=body.refresh_token,
            now=utcnow(),
        )
    if refreshed is None:
        raise Unauthenticated("The refresh token was already used; log in again", code="refresh_token_reused")
    user, issued = refreshed
    request.state.user_id = user.id
    return _token_read(issued, user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshRequest, request: Request, session: Session) -> Response:
    """End a login: its refresh token and every one rotated from it stop working (access tokens expire soon)."""
    user_id = await sessions.end_session(session, presented=body.refresh_token, now=utcnow())
    request.state.user_id = user_id
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={429: {"description": "Too many wrong current passwords (`rate_limited`, with Retry-After)"}},
)
async def change_password(
    body: PasswordChange,
    request: Request,
    principal: DetachedUser,
    hasher: Hasher,
    settings: Settings,
    throttle: Throttle,
    context: Context,
) -> Response:
    """Change your own password; every token of yours, on every device, stops working (log in again).

    Wrong current passwords count like failed logins (429 past the limit)."""
    # The throttle commits on connections of its own first; this request's write transaction opens only after it.
    async with transaction(context.session_factory) as session:
        await service.change_own_password(
            session,
            lookups=context.session_factory,
            hasher=hasher,
            throttle=throttle,
            user_id=principal.user_id,
            username=principal.username,
            address=request.state.client_address,
            current=body.current_password,
            new=body.new_password,
            min_password_length=settings.passwords.password_min_length,
            now=utcnow(),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/register",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "Self-registration is off (`registration_disabled`)"},
        429: {"description": "Too many registrations from this address (`rate_limited`, with Retry-After)"},
    },
)
async def register(
    body: RegisterRequest, request: Request, session: Session, hasher: Hasher, settings: Settings, throttle: Throttle
) -> UserRead:
    """Create your own worker account (when self-registration is on; a few per address and hour)."""
    user = await service.register(
        session,
        hasher=hasher,
        throttle=throttle,
        address=request.state.client_address,
        allowed=settings.self_registration,
        username=body.username,
        password=body.password,
        full_name=body.full_name,
        min_password_length=settings.passwords.password_min_length,
    )
    return UserRead.model_validate(user)


@router.get("/me", response_model=UserRead)
async def me(principal: CurrentUser, session: Session) -> UserRead:
    """The logged-in user."""
    user = await session.get(UserAccount, principal.user_id)
    return UserRead.model_validate(user)
