"""Users: creation, listing, roles and activation, with the last active admin always kept."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.sessions import revoke_everything
from core.clock import utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.models import Role, UserAccount
from core.security import PasswordHasher, Principal


def check_password_policy(password: str, *, min_length: int, field: str = "password") -> None:
    """Refuse passwords that are too short or only white space."""
    if len(password) < min_length or not password.strip():
        raise InvalidInput(
            f"The password must have at least {min_length} characters",
            fields={field: f"at least {min_length} characters"},
            code="weak_password",
        )


async def create_user(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    username: str,
    password: str,
    role: Role,
    full_name: str | None = None,
    min_password_length: int,
) -> UserAccount:
    """Add a user; a taken username is a conflict."""
    check_password_policy(password, min_length=min_password_length)
    password_hash = await hasher.hash_async(password)  # before anything is written or locked: hashes wait their turn
    taken = await session.scalar(select(UserAccount.id).where(UserAccount.username == username))
    if taken is not None:
        # One message whatever was asked: echoing the stored (lower-case) name would confirm an account's exact
        # spelling to anyone who can register.
        raise Conflict("This username is not available", code="username_taken", fields={"username": "already in use"})
    user = UserAccount(
        username=username,
        full_name=full_name,
        role=role,
        is_active=True,
        password_hash=password_hash,
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, *, user_id: int) -> UserAccount:
    """One user by id."""
    user = await session.get(UserAccount, user_id)
    if user is None:
        raise NotFound(f"User {user_id} does not exist")
    return user


async def list_users(
    session: AsyncSession, *, role: Role | None, is_active: bool | None, limit: int, offset: int
) -> tuple[list[UserAccount], int]:
    """A page of users ordered by id, and how many match in all."""
    query = select(UserAccount)
    if role is not None:
        query = query.where(UserAccount.role == role)
    if is_active is not None:
        query = query.where(UserAccount.is_active == is_active)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(UserAccount.id).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def _lock_user(session: AsyncSession, user_id: int) -> UserAccount:
    user = await session.scalar(
        select(UserAccount).where(UserAccount.id == user_id).with_for_update().execution_options(populate_existing=True)
    )
    if user is None:
        raise NotFound(f"User {user_id} does not exist")
    return user


async def _ensure_another_active_admin(session: AsyncSession, user: UserAccount) -> None:
    # Lock every active admin row, so two concurrent demotions cannot both pass this check (PostgreSQL).
    others = await session.scalars(
        select(UserAccount.id)
        .where(UserAccount.role == Role.ADMIN, UserAccount.is_active.is_(True), UserAccount.id != user.id)
        .with_for_update()
    )
    if not list(others):
        raise Conflict("This is the last active admin; promote another admin first", code="last_admin")


async def change_role(session: AsyncSession, *, actor: Principal, user_id: int, role: Role) -> UserAccount:
    """Give a user another role; the last active admin cannot be demoted."""
    user = await _lock_user(session, user_id)
    if user.role is Role.ADMIN and role is not Role.ADMIN and user.is_active:
        await _ensure_another_active_admin(session, user)
    if user.role is not role:
        user.role = role
        await revoke_everything(session, user=user, now=utcnow())
    await session.flush()
    return user


async def update_user(
    session: AsyncSession,
    *,
    actor: Principal,
    hasher: PasswordHasher,
    user_id: int,
    is_active: bool | None,
    full_name: str | None,
    password: str | None,
    min_password_length: int,
) -> UserAccount:
    """Activate, deactivate, rename or reset the password of a user."""
    new_hash = None
    if password is not None:  # checked and hashed before the row is locked: hashes wait their turn
        check_password_policy(password, min_length=min_password_length)
        new_hash = await hasher.hash_async(password)
    user = await _lock_user(session, user_id)
    if is_active is False and user.is_active and user.role is Role.ADMIN:
        await _ensure_another_active_admin(session, user)
    revoke = False
    if is_active is not None:
        revoke = is_active is False and user.is_active
        user.is_active = is_active
    if full_name is not None:
        user.full_name = full_name
    if new_hash is not None:
        user.password_hash = new_hash
        revoke = True
    if revoke:  # a reset password or a deactivation ends every session, and reactivation does not bring them back
        await revoke_everything(session, user=user, now=utcnow())
    await session.flush()
    return user
