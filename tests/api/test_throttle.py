"""Login and registration throttling, attacked the way the findings did: in parallel, from many addresses, with
forged X-Forwarded-For headers. Each test runs on SQLite and PostgreSQL (the attempts live in the database)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from core.models import AuthAttempt, Role
from tests.support.api import CLIENT_ADDRESS, Api, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import TEST_PASSWORD
from tests.support.logs import logged_events
from tests.support.sse import serving

PROXY = CLIENT_ADDRESS[0]  # the test client's address, trusted as a reverse proxy where a test says so


async def verifications(client: httpx.AsyncClient) -> float:
    """The password verifications the server has run, from its Prometheus metrics."""
    text = (await client.get("/metrics")).text
    [line] = [line for line in text.splitlines() if line.startswith("shopfloor_api_password_verifications_total ")]
    return float(line.split()[1])


def from_address(address: str) -> dict[str, str]:
    """What our reverse proxy would add for a client at `address`."""
    return {"X-Forwarded-For": address}


async def test_sixty_parallel_guesses_cost_at_most_the_limit_in_password_checks(committed_database: Database) -> None:
    settings = make_settings(committed_database.url, api={"trusted_proxies": "127.0.0.1"})
    async with running_api(committed_database, settings) as api, serving(api.app) as served:
        await api.create_user("victim", Role.ADMIN)
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
            checked_before = await verifications(client)
            guesses = await asyncio.gather(
                *(
                    client.post(
                        "/auth/login",
                        json={"username": "victim", "password": f"guess-{index}"},
                        headers=from_address("198.51.100.66"),
                    )
                    for index in range(60)
                )
            )
            statuses = Counter(response.status_code for response in guesses)
            assert await verifications(client) - checked_before <= settings.auth.login_max_failures_per_user
            assert statuses[401] <= settings.auth.login_max_failures_per_user
            assert statuses[429] == 60 - statuses[401]
            assert all(int(r.headers["Retry-After"]) > 0 for r in guesses if r.status_code == 429)
            # The real user, at their own address, right after.
            mine = await client.post(
                "/auth/login",
                json={"username": "victim", "password": TEST_PASSWORD},
                headers=from_address("192.0.2.10"),
            )
            assert mine.status_code == 200, mine.text


async def test_guesses_from_other_addresses_never_lock_the_user_out_at_their_own(database: Database) -> None:
    settings = make_settings(database.url, api={"trusted_proxies": PROXY})
    async with running_api(database, settings) as api:
        await api.create_user("victim", Role.ADMIN)
        for index in range(5):
            for _ in range(settings.auth.login_max_failures_per_user):
                response = await api.client.post(
                    "/auth/login",
                    json={"username": "victim", "password": "wrong-wrong"},
                    headers=from_address(f"198.51.100.{index}"),
                )
                assert response.status_code == 401
            blocked = await api.client.post(
                "/auth/login",
                json={"username": "victim", "password": TEST_PASSWORD},
                headers=from_address(f"198.51.100.{index}"),
            )
            assert blocked.status_code == 429  # the guessing address is blocked for this user ...
        mine = await api.client.post(
            "/auth/login", json={"username": "victim", "password": TEST_PASSWORD}, headers=from_address("192.0.2.10")
        )
        assert mine.status_code == 200  # ... the victim at their own address is not


async def test_past_the_ceiling_a_username_is_slowed_down_not_locked_out(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database.url, api={"trusted_proxies": PROXY}, login_slowdown_after=3, login_slowdown_s=0.3)
    async with running_api(database, settings) as api:
        await api.create_user("victim", Role.WORKER)
        for index in range(4):
            await api.client.post(
                "/auth/login",
                json={"username": "victim", "password": "wrong-wrong"},
                headers=from_address(f"198.51.100.{index}"),
            )
        assert len(logged_events(caplog, "login_slowed_down")) == 1  # the fourth waited
        mine = await api.client.post(
            "/auth/login", json={"username": "victim", "password": TEST_PASSWORD}, headers=from_address("192.0.2.10")
        )
        assert mine.status_code == 200
        assert len(logged_events(caplog, "login_slowed_down")) == 2


async def test_a_forged_forwarded_for_does_not_escape_the_throttle(database: Database) -> None:
    # No trusted proxy: the header is ignored. Behind our proxy: the entries the client wrote are ignored.
    for trusted in ("", PROXY):
        settings = make_settings(database.url, api={"trusted_proxies": trusted})
        async with running_api(database, settings) as api:
            await api.create_user(f"target{len(trusted)}", Role.WORKER)
            statuses = []
            for index in range(settings.auth.login_max_failures_per_user + 3):
                forged = f"10.9.{index}.1, 198.51.100.77" if trusted else f"10.9.{index}.1"
                response = await api.client.post(
                    "/auth/login",
                    json={"username": f"target{len(trusted)}", "password": "wrong-wrong"},
                    headers={"X-Forwarded-For": forged},
                )
                statuses.append(response.status_code)
            assert statuses[-3:] == [429, 429, 429], statuses


async def test_registration_is_throttled_per_address(database: Database) -> None:
    settings = make_settings(database.url, api={"trusted_proxies": PROXY}, registration_max_per_address=2)
    async with running_api(database, settings) as api:
        statuses = [
            (
                await api.client.post(
                    "/auth/register",
                    json={"username": f"new{index}", "password": "long-enough-1"},
                    headers=from_address("198.51.100.5"),
                )
            ).status_code
            for index in range(3)
        ]
        assert statuses == [201, 201, 429]
        elsewhere = await api.client.post(
            "/auth/register", json={"username": "new9", "password": "long-enough-1"}, headers=from_address("192.0.2.1")
        )
        assert elsewhere.status_code == 201


async def test_a_good_password_takes_its_attempt_back(api: Api) -> None:
    await api.create_user("regular", Role.WORKER)
    for _ in range(api.settings.auth.login_max_failures_per_user * 2):
        assert (
            await api.client.post("/auth/login", json={"username": "regular", "password": TEST_PASSWORD})
        ).status_code == 200


async def test_parallel_guesses_from_many_addresses_are_queued_apart(committed_database: Database) -> None:
    settings = make_settings(
        committed_database.url, api={"trusted_proxies": "127.0.0.1"}, login_slowdown_after=2, login_slowdown_s=0.2
    )
    async with (
        running_api(committed_database, settings) as api,
        serving(api.app) as served,
        httpx.AsyncClient(base_url=served.base_url, timeout=30) as client,
    ):
        await api.create_user("victim", Role.ADMIN)
        guesses = await asyncio.gather(
            *(
                client.post(
                    "/auth/login",
                    json={"username": "victim", "password": "wrong-wrong"},
                    headers=from_address(f"198.51.100.{index}"),
                )
                for index in range(6)
            )
        )
        assert [response.status_code for response in guesses] == [401] * 6  # slowed down, not refused
        async with api.session() as session:
            times = (
                await session.scalars(
                    select(AuthAttempt.at).where(AuthAttempt.key == "login-user:victim").order_by(AuthAttempt.at)
                )
            ).all()
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
        assert len(times) == 6
        assert all(gap >= 0.2 for gap in gaps[1:]), gaps  # past the first two, one turn per LOGIN_SLOWDOWN_S


async def test_wrong_current_passwords_count_like_failed_logins(api: Api) -> None:
    _, headers = await api.signed_in(Role.WORKER, "holder")
    statuses = [
        (
            await api.client.post(
                "/auth/password",
                json={"current_password": f"guess-{index}-x", "new_password": "a-new-password"},
                headers=headers,
            )
        ).status_code
        for index in range(api.settings.auth.login_max_failures_per_user + 1)
    ]
    assert statuses == [403] * api.settings.auth.login_max_failures_per_user + [429]
