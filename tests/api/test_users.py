"""User administration: listing, creating, roles, activation, and the last active admin."""

from __future__ import annotations

import pytest

from core.models import Role
from tests.support.api import Api, total_of


async def test_admin_creates_users_of_any_role(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    for role in ("admin", "planner", "worker"):
        response = await api.client.post(
            "/auth/users",
            json={"username": f"new-{role}", "password": "long-enough-1", "role": role},
            headers=admin,
        )
        assert response.status_code == 201
        assert response.json()["role"] == role
        await api.login(f"new-{role}", "long-enough-1")


async def test_list_is_paginated_and_filtered_by_role(api: Api) -> None:
    admin = await api.actor(Role.ADMIN, "boss")
    for index in range(5):
        await api.create_user(f"worker{index}", Role.WORKER)
    await api.create_user("planner0", Role.PLANNER)

    page = await api.client.get("/auth/users", params={"role": "worker", "limit": 2, "offset": 2}, headers=admin)
    assert page.status_code == 200
    assert total_of(page) == 5
    assert [user["username"] for user in page.json()] == ["worker2", "worker3"]

    everyone = await api.client.get("/auth/users", headers=admin)
    assert total_of(everyone) == 7


async def test_list_filters_by_activity(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    await api.create_user("inactive1", Role.WORKER, active=False)
    response = await api.client.get("/auth/users", params={"is_active": "false"}, headers=admin)
    assert [user["username"] for user in response.json()] == ["inactive1"]


@pytest.mark.parametrize(
    "params", [{"role": "superuser"}, {"limit": 0}, {"limit": 10_000}, {"offset": -1}, {"is_active": "maybe"}]
)
async def test_bad_list_parameters_are_422(api: Api, params: dict[str, str | int]) -> None:
    admin = await api.actor(Role.ADMIN)
    response = await api.client.get("/auth/users", params=params, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == next(iter(params))


async def test_unknown_role_is_422(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("someone", Role.WORKER)
    response = await api.client.patch(f"/auth/users/{user.id}/role", json={"role": "root"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "role"


async def test_unknown_user_is_404(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    for response in (
        await api.client.get("/auth/users/999999", headers=admin),
        await api.client.patch("/auth/users/999999/role", json={"role": "worker"}, headers=admin),
        await api.client.patch("/auth/users/999999", json={"is_active": False}, headers=admin),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


async def test_non_numeric_user_id_is_422(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    response = await api.client.get("/auth/users/abc", headers=admin)
    assert response.status_code == 422


async def test_last_active_admin_cannot_be_demoted_or_deactivated(api: Api) -> None:
    only_id, headers = await api.signed_in(Role.ADMIN, "only-admin")
    demote = await api.client.patch(f"/auth/users/{only_id}/role", json={"role": "planner"}, headers=headers)
    assert demote.status_code == 409
    assert demote.json()["code"] == "last_admin"
    deactivate = await api.client.patch(f"/auth/users/{only_id}", json={"is_active": False}, headers=headers)
    assert deactivate.status_code == 409
    me = await api.client.get("/auth/me", headers=headers)
    assert me.json()["role"] == "admin"
    assert me.json()["is_active"] is True


async def test_an_inactive_admin_does_not_count_as_another_admin(api: Api) -> None:
    only = await api.create_user("active-admin", Role.ADMIN)
    await api.create_user("sleeping-admin", Role.ADMIN, active=False)
    headers = await api.login("active-admin")
    response = await api.client.patch(f"/auth/users/{only.id}/role", json={"role": "worker"}, headers=headers)
    assert response.status_code == 409


async def test_with_two_admins_one_can_step_down(api: Api) -> None:
    first = await api.create_user("admin-a", Role.ADMIN)
    await api.create_user("admin-b", Role.ADMIN)
    headers = await api.login("admin-a")
    response = await api.client.patch(f"/auth/users/{first.id}/role", json={"role": "planner"}, headers=headers)
    assert response.status_code == 200
    assert response.json()["role"] == "planner"
    assert (await api.client.get("/auth/users", headers=headers)).status_code == 401  # a role change ends sessions
    assert (await api.client.get("/auth/users", headers=await api.login("admin-a"))).status_code == 403


async def test_admin_resets_a_password(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("forgetful", Role.WORKER)
    response = await api.client.patch(f"/auth/users/{user.id}", json={"password": "brand-new-pass"}, headers=admin)
    assert response.status_code == 200
    await api.login("forgetful", "brand-new-pass")
    old = await api.client.post("/auth/login", json={"username": "forgetful", "password": "correct-horse-battery"})
    assert old.status_code == 401


async def test_reactivated_user_can_log_in_again(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("returning", Role.WORKER, active=False)
    response = await api.client.patch(f"/auth/users/{user.id}", json={"is_active": True}, headers=admin)
    assert response.json()["is_active"] is True
    await api.login("returning")


async def test_unknown_fields_are_refused(api: Api) -> None:
    admin = await api.actor(Role.ADMIN)
    user = await api.create_user("target", Role.WORKER)
    response = await api.client.patch(f"/auth/users/{user.id}", json={"role": "admin"}, headers=admin)
    assert response.status_code == 422
