"""User administration (admin only), under /auth/users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import AdminUser, Hasher, Session, Settings
from api.pagination import PAGED, Id, Pagination
from api.users import service
from api.users.schemas import UserCreate, UserRead, UserRoleUpdate, UserUpdate
from core.models import Role

router = APIRouter(prefix="/auth/users", tags=["users"])


@router.get("", response_model=list[UserRead], responses=PAGED)
async def list_users(
    session: Session,
    _admin: AdminUser,
    page: Pagination,
    role: Annotated[Role | None, Query(description="Only users with this role")] = None,
    is_active: Annotated[bool | None, Query(description="Only active (true) or deactivated (false) users")] = None,
) -> list[UserRead]:
    """List users, optionally by role or activity."""
    users, total = await service.list_users(
        session, role=role, is_active=is_active, limit=page.limit, offset=page.offset
    )
    items = [UserRead.model_validate(user) for user in users]
    return page.respond(items, total)


@router.post("", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def create_user(
    body: UserCreate, session: Session, _admin: AdminUser, hasher: Hasher, settings: Settings
) -> UserRead:
    """Create a user with any role."""
    user = await service.create_user(
        session,
        hasher=hasher,
        username=body.username,
        password=body.password,
        role=body.role,
        full_name=body.full_name,
        min_password_length=settings.passwords.password_min_length,
    )
    return UserRead.model_validate(user)


@router.get("/{user_id}", response_model=UserRead)
async def get_user(user_id: Id, session: Session, _admin: AdminUser) -> UserRead:
    """One user."""
    return UserRead.model_validate(await service.get_user(session, user_id=user_id))


@router.patch("/{user_id}/role", response_model=UserRead)
async def change_role(user_id: Id, body: UserRoleUpdate, session: Session, admin: AdminUser) -> UserRead:
    """Change a user's role; demoting the last active admin is refused (409)."""
    user = await service.change_role(session, actor=admin, user_id=user_id, role=body.role)
    return UserRead.model_validate(user)


@router.patch("/{user_id}", response_model=UserRead)
async def update_user(
    user_id: Id, body: UserUpdate, session: Session, admin: AdminUser, hasher: Hasher, settings: Settings
) -> UserRead:
    """Activate or deactivate (never the last active admin), rename, or reset the password of a user."""
    user = await service.update_user(
        session,
        actor=admin,
        hasher=hasher,
        user_id=user_id,
        is_active=body.is_active,
        full_name=body.full_name,
        password=body.password,
        min_password_length=settings.passwords.password_min_length,
    )
    return UserRead.model_validate(user)
