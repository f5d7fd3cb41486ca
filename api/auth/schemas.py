"""What the authentication endpoints accept and return."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas import InputModel
from api.users.schemas import FullName, Password, Username
from core.models import Role


class LoginRequest(InputModel):
    """Credentials, as JSON or as the OAuth2 password form."""

    model_config = ConfigDict(extra="ignore")

    username: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=64)]
    password: Password


class TokenRead(BaseModel):
    """A bearer token for the `Authorization` header, and the refresh token that renews it."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 -- the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires")
    role: Role
    refresh_token: str = Field(description="Trade it at POST /auth/refresh for new tokens; each is good once")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires")


class RefreshRequest(InputModel):
    """A refresh token from a login or an earlier refresh."""

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PasswordChange(InputModel):
    """Change your own password: the current one, then the new one."""

    current_password: Password
    new_password: Password


class RegisterRequest(InputModel):
    """Self-registration; the new account is a worker."""

    username: Username
    password: Password
    full_name: FullName | None = None
    # The original app's register form sends the role of the new user. Only `worker` can be asked for here; anything
    # else is a 422 naming the field (an admin makes planners and admins).
    role: Literal["worker"] | None = Field(default=None, description="Accepted for older clients; always `worker`")
