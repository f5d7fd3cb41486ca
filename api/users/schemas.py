"""What the user endpoints accept and return."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas import InputModel
from core.models import Role

Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"),
    Field(description="3 to 64 characters: letters, digits, '.', '_' or '-'; stored in lower case"),
]
# The minimum length is a setting, checked by the service; 256 bounds the hashing cost of one request.
Password = Annotated[str, Field(min_length=1, max_length=256, description="The password in clear")]
FullName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class UserRead(BaseModel):
    """A user as others see it; never the password hash."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    full_name: str | None
    role: Role
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class UserCreate(InputModel):
    """An admin creates a user of any role."""

    username: Username
    password: Password
    role: Role
    full_name: FullName | None = None


class UserRoleUpdate(InputModel):
    """A new role for a user."""

    role: Role


class UserUpdate(InputModel):
    """Activate or deactivate a user, rename, or set a new password; absent fields stay as they are."""

    is_active: bool | None = None
    full_name: FullName | None = None
    password: Password | None = None
