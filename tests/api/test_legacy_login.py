"""Users imported from the original app log in with their old passwords; the first login rehashes them to argon2id."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.models import Role, UserAccount
from tests.support.api import Api
from tests.support.legacy_app import SHA256_CRYPT_PASSWORD, SHA256_CRYPT_VECTORS, bcrypt_hash, pbkdf2_sha256_hash

PASSWORD = "eski-parola-123"

LEGACY_HASHES = {
    "bcrypt-2b": (bcrypt_hash(PASSWORD, "2b"), PASSWORD),
    "bcrypt-2a": (bcrypt_hash(PASSWORD, "2a"), PASSWORD),
    "bcrypt-2y": (bcrypt_hash(PASSWORD, "2y"), PASSWORD),
    "pbkdf2_sha256": (pbkdf2_sha256_hash(PASSWORD), PASSWORD),
    "sha256_crypt": (SHA256_CRYPT_VECTORS[0], SHA256_CRYPT_PASSWORD),
    "sha256_crypt-rounds": (SHA256_CRYPT_VECTORS[1], SHA256_CRYPT_PASSWORD),
}


async def add_legacy_user(api: Api, username: str, password_hash: str, *, active: bool = True) -> int:
    async with api.session() as session:
        user = UserAccount(username=username, role=Role.WORKER, password_hash=password_hash, is_active=active)
        session.add(user)
        await session.flush()
        return user.id


async def stored_hash(api: Api, user_id: int) -> str:
    async with api.session() as session:
        found = await session.scalar(select(UserAccount.password_hash).where(UserAccount.id == user_id))
    assert found is not None
    return found


async def form_login(api: Api, username: str, password: str) -> int:
    """A login as the original mobile app sends it (the OAuth2 password form)."""
    response = await api.client.post("/auth/login", data={"username": username, "password": password})
    return response.status_code


@pytest.mark.parametrize("scheme", sorted(LEGACY_HASHES))
async def test_a_legacy_hash_logs_in_and_is_replaced_by_argon2id(api: Api, scheme: str) -> None:
    password_hash, password = LEGACY_HASHES[scheme]
    user_id = await add_legacy_user(api, "eski-isci", password_hash)

    assert await form_login(api, "eski-isci", "wrong-password") == 401
    assert await stored_hash(api, user_id) == password_hash  # a failed login changes nothing

    assert await form_login(api, "Eski-Isci", password) == 200
    rehashed = await stored_hash(api, user_id)
    assert rehashed.startswith("$argon2id$")

    assert await form_login(api, "eski-isci", password) == 200
    assert await stored_hash(api, user_id) == rehashed  # argon2id at the current cost: left alone
    await api.login("eski-isci", password)


async def test_an_unknown_hash_cannot_log_in_until_an_admin_sets_a_password(api: Api) -> None:
    user_id = await add_legacy_user(api, "kayip", "md5$9f86d081884c7d65", active=False)
    assert await form_login(api, "kayip", "anything") == 401

    admin = await api.actor(Role.ADMIN)
    response = await api.client.patch(
        f"/auth/users/{user_id}", json={"password": "yeni-parola-456", "is_active": True}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert await form_login(api, "kayip", "yeni-parola-456") == 200
