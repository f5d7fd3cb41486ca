"""Logging in, registering, tokens on real requests, and login throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import select

from core.models import Role, UserAccount
from tests.support.api import Api, bearer, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import TEST_PASSWORD


async def test_login_with_json_returns_a_bearer_token(api: Api) -> None:
    await api.create_user("planner1", Role.PLANNER)
    response = await api.client.post("/auth/login", json={"username": "planner1", "password": TEST_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["role"] == "planner"
    assert body["expires_in"] == api.settings.auth.access_token_ttl_s
    me = await api.client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "planner1"
    assert "password_hash" not in me.json()


async def test_tokens_follow_the_wall_clock_not_the_app_clock(api: Api) -> None:
    # The app clock dates stage events; a token is checked against the wall clock, so it must be issued by it.
    await api.create_user("frozen1", Role.WORKER)
    api.set_now(datetime.now(UTC) - timedelta(days=3))
    headers = await api.login("frozen1")
    claims = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 60
    me = await api.client.get("/auth/me", headers=headers)
    assert me.status_code == 200, me.text


async def test_login_with_the_oauth2_form_as_swagger_sends_it(api: Api) -> None:
    await api.create_user("admin1", Role.ADMIN)
    response = await api.client.post(
        "/auth/login",
        data={"grant_type": "password", "username": "admin1", "password": TEST_PASSWORD, "scope": ""},
    )
    assert response.status_code == 200
    assert response.json()["role"] == "admin"


async def test_usernames_are_case_insensitive(api: Api) -> None:
    await api.create_user("mehmet", Role.WORKER)
    response = await api.client.post("/auth/login", json={"username": " Mehmet ", "password": TEST_PASSWORD})
    assert response.status_code == 200


async def test_login_records_last_login(api: Api) -> None:
    await api.create_user("ayse", Role.WORKER)
    await api.login("ayse")
    async with api.session() as session:
        user = await session.scalar(select(UserAccount).where(UserAccount.username == "ayse"))
    assert user is not None
    assert user.last_login_at is not None
    assert abs(user.last_login_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(("username", "password"), [("ayse", "wrong-password"), ("nobody", TEST_PASSWORD)])
async def test_bad_credentials_are_401_without_saying_which_part(api: Api, username: str, password: str) -> None:
    await api.create_user("ayse", Role.WORKER)
    response = await api.client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_credentials"
    assert response.json()["detail"] == "Invalid username or password"


async def test_deactivated_user_cannot_log_in(api: Api) -> None:
    await api.create_user("gone", Role.WORKER, active=False)
    response = await api.client.post("/auth/login", json={"username": "gone", "password": TEST_PASSWORD})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("content", "content_type", "field"),
    [
        (b"{not json", "application/json", "body"),
        (b'{"username": "x"}', "application/json", "password"),
        (b"[1, 2]", "application/json", "body"),
        (b"username=x", "application/x-www-form-urlencoded", "password"),
    ],
)
async def test_malformed_login_is_a_422_problem(api: Api, content: bytes, content_type: str, field: str) -> None:
    response = await api.client.post("/auth/login", content=content, headers={"content-type": content_type})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert field in {error["field"] for error in body["errors"]}


async def test_login_with_an_unsupported_media_type_is_415(api: Api) -> None:
    response = await api.client.post("/auth/login", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


async def test_repeated_failures_for_one_username_are_throttled(api: Api) -> None:
    await api.create_user("target", Role.ADMIN)
    limit = api.settings.auth.login_max_failures_per_user
    for _ in range(limit):
        response = await api.client.post("/auth/login", json={"username": "target", "password": "guess-guess"})
        assert response.status_code == 401
    blocked = await api.client.post("/auth/login", json={"username": "target", "password": TEST_PASSWORD})
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "rate_limited"
    assert 0 < int(blocked.headers["Retry-After"]) <= api.settings.auth.login_failure_window_s


async def test_repeated_failures_from_one_address_are_throttled(database: Database) -> None:
    settings = make_settings(database.url, login_max_failures_per_address=3, login_max_failures_per_user=100)
    async with running_api(database, settings) as api:
        await api.create_user("victim", Role.WORKER)
        for index in range(3):
            await api.client.post("/auth/login", json={"username": f"spray{index}", "password": "x-x-x-x"})
        blocked = await api.client.post("/auth/login", json={"username": "victim", "password": TEST_PASSWORD})
        assert blocked.status_code == 429
        assert "Retry-After" in blocked.headers


async def test_register_creates_a_worker_who_can_log_in(api: Api) -> None:
    response = await api.client.post(
        "/auth/register",
        json={"username": "New.Worker", "password": "long-enough-1", "full_name": "Yeni İşçi"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["role"] == "worker"
    assert body["username"] == "new.worker"
    assert body["full_name"] == "Yeni İşçi"
    assert (await api.login("new.worker", "long-enough-1"))["Authorization"].startswith("Bearer ")


async def test_register_refuses_a_role_field(api: Api) -> None:
    response = await api.client.post(
        "/auth/register", json={"username": "sneaky", "password": "long-enough-1", "role": "admin"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "role"


async def test_register_a_taken_username_is_409(api: Api) -> None:
    await api.create_user("taken", Role.WORKER)
    response = await api.client.post("/auth/register", json={"username": "TAKEN", "password": "long-enough-1"})
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "ab", "password": "long-enough-1"}, "username"),
        ({"username": "has space", "password": "long-enough-1"}, "username"),
        ({"username": "okname", "password": "short"}, "password"),
        ({"username": "okname"}, "password"),
        ({"username": "okname", "password": "x" * 300}, "password"),
    ],
)
async def test_register_rejects_bad_input_with_field_errors(api: Api, payload: dict[str, str], field: str) -> None:
    response = await api.client.post("/auth/register", json=payload)
    assert response.status_code == 422
    assert field in {error["field"] for error in response.json()["errors"]}


async def test_register_can_be_turned_off(database: Database) -> None:
    async with running_api(database, make_settings(database.url, allow_self_registration=False)) as api:
        response = await api.client.post("/auth/register", json={"username": "someone", "password": "long-enough-1"})
        assert response.status_code == 403
        assert response.json()["code"] == "registration_disabled"


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
async def test_missing_or_garbage_credentials_are_401(api: Api, header: str) -> None:
    response = await api.client.get("/auth/me", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthenticated"


async def test_token_signed_with_another_key_is_401(api: Api) -> None:
    user = await api.create_user("eve", Role.ADMIN)
    now = datetime.now(UTC)
    forged = jwt.encode(
        {
            "sub": str(user.id),
            "iss": "shopfloor",
            "aud": "shopfloor-api",
            "iat": now,
            "exp": now + timedelta(hours=1),
        },
        "another-key-" * 4,
        algorithm="HS256",
    )
    response = await api.client.get("/auth/me", headers=bearer(forged))
    assert response.status_code == 401


async def test_deactivation_takes_effect_on_the_next_request(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    worker_id, worker_headers = await api.signed_in(Role.WORKER, "soon-gone")
    assert (await api.client.get("/auth/me", headers=worker_headers)).status_code == 200
    response = await api.client.patch(f"/auth/users/{worker_id}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200
    assert (await api.client.get("/auth/me", headers=worker_headers)).status_code == 401


async def test_role_change_ends_the_old_tokens_and_the_next_login_has_the_new_role(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    planner_id, headers = await api.signed_in(Role.PLANNER, "promoted")
    response = await api.client.patch(f"/auth/users/{planner_id}/role", json={"role": "admin"}, headers=admin)
    assert response.status_code == 200
    old = await api.client.get("/auth/users", headers=headers)
    assert (old.status_code, old.json()["code"]) == (401, "token_revoked")
    assert (await api.client.get("/auth/users", headers=await api.login("promoted"))).status_code == 200
