"""Log in, register, and who am I."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from api.auth import service
from api.auth.schemas import LoginRequest, RegisterRequest, TokenRead
from api.deps import CurrentUser, Hasher, Now, Session, Settings, Throttle, Tokens
from api.users.schemas import UserRead
from core.clock import utcnow
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


@router.post("/login", response_model=TokenRead, openapi_extra=_LOGIN_BODY)
async def login(
    now: Now, request: Request, session: Session, tokens: Tokens, hasher: Hasher, throttle: Throttle
) -> TokenRead:
    """Exchange a username and password for a bearer token (JSON body or the OAuth2 password form)."""
    credentials = await _read_credentials(request)
    user = await service.authenticate(
        session,
        hasher=hasher,
        throttle=throttle,
        username=credentials.username,
        password=credentials.password,
        address=request.state.client_address,
        now=now,
        monotonic_now=time.monotonic(),
    )
    request.state.user_id = user.id
    # Tokens are checked against the wall clock, so they are issued by it too (not by the app's clock, which tests
    # may freeze in the past).
    issued = tokens.issue(user_id=user.id, role=user.role, now=utcnow())
    return TokenRead(access_token=issued.token, expires_in=issued.expires_in, role=user.role)


@router.post("/register", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def register(body: RegisterRequest, session: Session, hasher: Hasher, settings: Settings) -> UserRead:
    """Create your own worker account (when self-registration is on)."""
    user = await service.register(
        session,
        hasher=hasher,
        allowed=settings.auth.allow_self_registration,
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
