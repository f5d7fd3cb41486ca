"""The user behind a bearer token, remembered per token for AUTH_USER_CACHE_S (`api.auth.cache`): read once for a
burst of requests; a revocation made by this process applies at once, one made elsewhere within the period."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydantic import ValidationError
from sqlalchemy import event, inspect, update
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession

from api.auth.sessions import revoke_everything
from api.context import context_of
from core.clock import utcnow
from core.models import Role, UserAccount
from core.security import Principal
from core.settings import AuthSettings
from tests.support.api import Api, make_settings, running_api, token_of
from tests.support.db import DIALECT_FREE, Database
from tests.support.factories import TEST_PASSWORD, make_machine

pytestmark = DIALECT_FREE


@contextmanager
def user_reads() -> Iterator[list[int]]:
    """How many statements read the user table while the block runs (one counter)."""
    count = [0]
    mapper = inspect(UserAccount)

    def counted(state: ORMExecuteState) -> None:
        if state.is_select and state.bind_mapper is mapper:
            count[0] += 1

    event.listen(OrmSession, "do_orm_execute", counted)
    try:
        yield count
    finally:
        event.remove(OrmSession, "do_orm_execute", counted)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def deactivate_elsewhere(api: Api, user_id: int) -> None:
    """What the admin command or another API process does: the row changes behind this process's back."""
    async with api.begin() as conn:
        await conn.execute(
            update(UserAccount)
            .where(UserAccount.id == user_id)
            .values(is_active=False, token_version=UserAccount.token_version + 1)
        )


async def test_a_burst_of_requests_reads_the_user_once(api: Api) -> None:
    headers = await api.actor(Role.WORKER)
    with user_reads() as reads:
        for _ in range(5):
            assert (await api.client.get("/machines", headers=headers)).status_code == 200
    assert reads == [1]


async def test_a_deactivation_through_the_api_ends_a_remembered_token_at_once(api: Api) -> None:
    """The attack: a worker keeps using a token the API has just remembered, after an admin deactivated them."""
    worker_id, worker = await api.signed_in(Role.WORKER)
    admin = await api.actor(Role.ADMIN)
    assert (await api.client.get("/machines", headers=worker)).status_code == 200
    assert (
        await api.client.patch(f"/auth/users/{worker_id}", json={"is_active": False}, headers=admin)
    ).status_code == 200
    refused = await api.client.get("/machines", headers=worker)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


async def test_a_demotion_through_the_api_ends_the_old_role_at_once(api: Api) -> None:
    planner_id, planner = await api.signed_in(Role.PLANNER)
    admin = await api.actor(Role.ADMIN)
    assert (await api.client.get("/workorders", headers=planner)).status_code == 200
    demoted = await api.client.patch(f"/auth/users/{planner_id}/role", json={"role": "worker"}, headers=admin)
    assert demoted.status_code == 200, demoted.text
    refused = await api.client.get("/workorders", headers=planner)
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")


async def test_a_change_made_elsewhere_applies_within_the_period(api: Api) -> None:
    principals = context_of(api.app).principals
    principals.clock = clock = FakeClock()
    worker_id, worker = await api.signed_in(Role.WORKER)
    assert (await api.client.get("/machines", headers=worker)).status_code == 200
    await deactivate_elsewhere(api, worker_id)
    # Within AUTH_USER_CACHE_S this process does not know yet (the documented window) ...
    clock.now += principals.ttl_s - 0.5
    assert (await api.client.get("/machines", headers=worker)).status_code == 200
    # ... and once it has passed the user is read again and refused.
    clock.now += 1
    assert (await api.client.get("/machines", headers=worker)).status_code == 401


async def test_a_ticket_asked_for_with_a_token_revoked_elsewhere_opens_nothing(api: Api) -> None:
    """The attack: the password was changed through another API process; within AUTH_USER_CACHE_S this one still
    knows the old token, and a stream ticket asked for with it must not carry the new token version (the stream it
    opened would then outlive the revocation)."""
    machine_id = (await api.add(make_machine)).id
    worker_id, worker = await api.signed_in(Role.WORKER)
    assert (await api.client.get("/machines", headers=worker)).status_code == 200  # remembered from here
    async with api.begin() as conn:  # the other process's revocation
        await conn.execute(
            update(UserAccount).where(UserAccount.id == worker_id).values(token_version=UserAccount.token_version + 1)
        )
    issued = await api.client.post(f"/machines/{machine_id}/stream/ticket", headers=worker)
    assert issued.status_code == 201  # within the documented window
    async with asyncio.timeout(10):  # a stream that opened would never end here
        opened = await api.client.get(f"/machines/{machine_id}/stream", params={"ticket": issued.json()["ticket"]})
    assert (opened.status_code, opened.json()["code"]) == (401, "invalid_ticket")


async def test_a_user_read_while_the_revocation_commits_is_forgotten_after_the_commit(api: Api) -> None:
    """A request that read the old row between the revocation's first forget and its commit, and remembered it,
    is forgotten again once the revocation commits."""
    worker_id, worker = await api.signed_in(Role.WORKER)
    principals = context_of(api.app).principals
    token = token_of(worker)
    async with api.session() as session:
        user = await session.get(UserAccount, worker_id)
        assert user is not None
        stale = Principal(user_id=user.id, username=user.username, role=user.role, token_version=user.token_version)
        await revoke_everything(session, user=user, now=utcnow())
        principals.put(token, stale, generation=principals.generation)  # read after the first forget
        assert principals.get(token) == stale
    assert principals.get(token) is None
    assert (await api.client.get("/machines", headers=worker)).status_code == 401


async def test_a_login_checked_against_a_password_reset_meanwhile_is_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: the old password is tried while an admin's reset commits; the check passed against the old hash,
    and a session made then would carry the new token version, surviving the reset."""
    worker_id, _ = await api.signed_in(Role.WORKER, "reset-race")
    hasher = context_of(api.app).hasher
    verify = hasher.verify_async

    async def verify_then_reset(password_hash: str | None, password: str) -> bool:
        checked = await verify(password_hash, password)
        async with api.begin() as conn:  # the reset commits while the login is between its check and its lock
            await conn.execute(
                update(UserAccount)
                .where(UserAccount.id == worker_id)
                .values(password_hash=hasher.hash("a-new-password-42"), token_version=UserAccount.token_version + 1)
            )
        return checked

    monkeypatch.setattr(hasher, "verify_async", verify_then_reset)
    response = await api.client.post("/auth/login", json={"username": "reset-race", "password": TEST_PASSWORD})
    assert (response.status_code, response.json()["code"]) == (401, "invalid_credentials")


async def test_zero_reads_the_user_on_every_request(database: Database) -> None:
    async with running_api(database, make_settings(database.url, auth_user_cache_s=0)) as api:
        worker_id, worker = await api.signed_in(Role.WORKER)
        with user_reads() as reads:
            for _ in range(3):
                assert (await api.client.get("/machines", headers=worker)).status_code == 200
        assert reads == [3]
        await deactivate_elsewhere(api, worker_id)
        assert (await api.client.get("/machines", headers=worker)).status_code == 401


@pytest.mark.parametrize("value", [-1, 61])
def test_a_period_out_of_range_is_refused_at_start(value: float) -> None:
    with pytest.raises(ValidationError, match="auth_user_cache_s"):
        AuthSettings.model_validate({"secret_key": "t" * 48, "auth_user_cache_s": value})
