"""Sessions that last a shift and can be ended: refresh-token rotation, reuse detection, logout, and every older
token refused at once after a password change or reset, a deactivation or a role change."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from api.context import context_of
from core.clock import utcnow
from core.models import RefreshToken, Role
from core.security import secret_digest
from tests.support.api import Api, bearer, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import TEST_PASSWORD
from tests.support.sse import serving


async def login(api: Api, username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
    response = await api.client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def refresh(api: Api, token: str) -> tuple[int, dict[str, str]]:
    response = await api.client.post("/auth/refresh", json={"refresh_token": token})
    return response.status_code, response.json()


async def me(api: Api, access_token: str) -> int:
    return (await api.client.get("/auth/me", headers=bearer(access_token))).status_code


async def test_login_gives_a_short_access_token_and_a_refresh_token_for_the_shift(api: Api) -> None:
    await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    assert int(body["expires_in"]) == api.settings.auth.access_token_ttl_s == 15 * 60
    assert int(body["refresh_expires_in"]) >= 12 * 3600
    assert body["refresh_token"]
    assert body["refresh_token"] != body["access_token"]


async def test_an_expired_access_token_is_renewed_with_the_refresh_token(api: Api) -> None:
    user = await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    expired = context_of(api.app).tokens.issue(
        user_id=user.id, role=Role.WORKER, now=utcnow() - timedelta(hours=1), version=0
    )
    assert await me(api, expired.token) == 401
    status, renewed = await refresh(api, body["refresh_token"])
    assert status == 200
    assert await me(api, renewed["access_token"]) == 200
    assert renewed["refresh_token"] != body["refresh_token"]
    assert (await refresh(api, renewed["refresh_token"]))[0] == 200  # the next one works in turn


async def test_a_reused_refresh_token_revokes_its_whole_family(api: Api) -> None:
    await api.create_user("worker1", Role.WORKER)
    first = await login(api, "worker1")
    other_device = await login(api, "worker1")
    _, second = await refresh(api, first["refresh_token"])
    status, problem = await refresh(api, first["refresh_token"])  # a copy of the used token comes back
    assert (status, problem["code"]) == (401, "refresh_token_reused")
    status, problem = await refresh(api, second["refresh_token"])  # the thief's or the owner's: both are gone
    assert (status, problem["code"]) == (401, "refresh_token_revoked")
    status, _ = await refresh(api, other_device["refresh_token"])  # another login is another family
    assert status == 200


async def test_unknown_and_expired_refresh_tokens_are_refused(api: Api) -> None:
    status, problem = await refresh(api, "made-up")
    assert (status, problem["code"]) == (401, "invalid_refresh_token")
    await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    async with api.session() as session:
        await session.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    status, problem = await refresh(api, body["refresh_token"])
    assert (status, problem["code"]) == (401, "refresh_token_expired")


async def test_logout_ends_the_login(api: Api) -> None:
    await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    response = await api.client.post("/auth/logout", json={"refresh_token": body["refresh_token"]})
    assert response.status_code == 204
    status, _ = await refresh(api, body["refresh_token"])
    assert status == 401
    again = await api.client.post("/auth/logout", json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 204  # idempotent, and says nothing about whether the token existed


async def test_a_password_reset_refuses_every_older_token_at_the_next_request(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    assert await me(api, body["access_token"]) == 200
    reset = await api.client.patch(f"/auth/users/{user.id}", json={"password": "brand-new-pass"}, headers=admin)
    assert reset.status_code == 200
    response = await api.client.get("/auth/me", headers=bearer(body["access_token"]))
    assert (response.status_code, response.json()["code"]) == (401, "token_revoked")
    assert (await refresh(api, body["refresh_token"]))[0] == 401
    assert await me(api, (await login(api, "worker1", "brand-new-pass"))["access_token"]) == 200


async def test_deactivate_then_reactivate_does_not_bring_old_tokens_back(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    for active in (False, True):
        response = await api.client.patch(f"/auth/users/{user.id}", json={"is_active": active}, headers=admin)
        assert response.status_code == 200
    assert await me(api, body["access_token"]) == 401
    assert (await refresh(api, body["refresh_token"]))[0] == 401
    assert await me(api, (await login(api, "worker1"))["access_token"]) == 200


async def test_changing_your_own_password_signs_you_out_everywhere(api: Api) -> None:
    await api.create_user("worker1", Role.WORKER)
    phone, tablet = await login(api, "worker1"), await login(api, "worker1")
    wrong = await api.client.post(
        "/auth/password",
        json={"current_password": "not-my-password", "new_password": "a-new-password"},
        headers=bearer(phone["access_token"]),
    )
    assert (wrong.status_code, wrong.json()["code"]) == (403, "wrong_password")
    changed = await api.client.post(
        "/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": "a-new-password"},
        headers=bearer(phone["access_token"]),
    )
    assert changed.status_code == 204
    for device in (phone, tablet):
        assert await me(api, device["access_token"]) == 401
        assert (await refresh(api, device["refresh_token"]))[0] == 401
    assert await me(api, (await login(api, "worker1", "a-new-password"))["access_token"]) == 200


async def test_a_refresh_token_issued_before_a_reset_committed_is_refused(api: Api) -> None:
    # A refresh that read the user just before an admin's reset committed would hand out a token the reset's
    # revocation never saw; the token carries the version it was issued under, and that version is now old.
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("worker1", Role.WORKER)
    await login(api, "worker1")
    reset = await api.client.patch(f"/auth/users/{user.id}", json={"password": "brand-new-pass"}, headers=admin)
    assert reset.status_code == 200
    late = "issued-in-the-race"
    async with api.session() as session:
        session.add(
            RefreshToken(
                user_id=user.id,
                family="race",
                token_hash=secret_digest(late),
                token_version=0,
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    status, problem = await refresh(api, late)
    assert (status, problem["code"]) == (401, "refresh_token_revoked")


async def test_renewing_never_extends_the_login_past_its_first_deadline(api: Api) -> None:
    await api.create_user("worker1", Role.WORKER)
    body = await login(api, "worker1")
    status, renewed = await refresh(api, body["refresh_token"])
    assert status == 200
    assert int(renewed["refresh_expires_in"]) <= int(body["refresh_expires_in"])
    async with api.session() as session:
        deadlines = set((await session.scalars(select(RefreshToken.expires_at))).all())
    assert len(deadlines) == 1  # the rotated token keeps the family's deadline


async def test_two_parallel_uses_of_one_refresh_token_are_a_reuse(committed_database: Database) -> None:
    async with (
        running_api(committed_database, make_settings(committed_database.url)) as api,
        serving(api.app) as served,
        httpx.AsyncClient(base_url=served.base_url, timeout=30) as client,
    ):
        await api.create_user("worker1", Role.WORKER)
        body = await login(api, "worker1")
        both = await asyncio.gather(
            *(client.post("/auth/refresh", json={"refresh_token": body["refresh_token"]}) for _ in range(2))
        )
        assert sorted(response.status_code for response in both) == [200, 401]
        [winner] = [response.json() for response in both if response.status_code == 200]
        # The copy was detected: the family is revoked, so the winner's next token is refused too.
        again = await client.post("/auth/refresh", json={"refresh_token": winner["refresh_token"]})
        assert again.status_code == 401
