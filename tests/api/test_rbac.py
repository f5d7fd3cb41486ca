"""Every route crossed with {anonymous, worker, planner, admin}, checked against the design's roles table.

A route missing from ROUTES fails `test_every_route_is_in_the_table`: a new route must say who may call it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from api.app import create_app
from core.models import Role
from tests.conftest import Api, make_settings

ANONYMOUS = "anonymous"
ACTORS = (ANONYMOUS, Role.WORKER.value, Role.PLANNER.value, Role.ADMIN.value)
PUBLIC = frozenset(ACTORS)
ANY_USER = frozenset({Role.WORKER.value, Role.PLANNER.value, Role.ADMIN.value})
ADMIN = frozenset({Role.ADMIN.value})


@dataclass(frozen=True)
class Target:
    """Ids the request paths and bodies may refer to."""

    user_id: int


@dataclass(frozen=True)
class Rule:
    method: str
    path: str
    allowed: frozenset[str]
    body: Callable[[Target], dict[str, Any]] | None = None


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


ROUTES = [
    Rule(
        "POST",
        "/auth/login",
        PUBLIC,
        lambda _: {"username": "rbac-target", "password": "correct-horse-battery"},
    ),
    Rule(
        "POST", "/auth/register", PUBLIC, lambda _: {"username": _unique("reg"), "password": "long-enough-1"}
    ),
    Rule("GET", "/auth/me", ANY_USER),
    Rule("GET", "/auth/users", ADMIN),
    Rule(
        "POST",
        "/auth/users",
        ADMIN,
        lambda _: {"username": _unique("made"), "password": "long-enough-1", "role": "worker"},
    ),
    Rule("GET", "/auth/users/{user_id}", ADMIN),
    Rule("PATCH", "/auth/users/{user_id}/role", ADMIN, lambda _: {"role": "planner"}),
    Rule("PATCH", "/auth/users/{user_id}", ADMIN, lambda _: {"full_name": "Renamed"}),
    Rule("GET", "/health", PUBLIC),
    Rule("GET", "/ready", PUBLIC),
]


def test_every_route_is_in_the_table(tmp_path: Any) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'routes.db'}"))
    served = {
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    }
    table = {(rule.method, rule.path) for rule in ROUTES}
    assert served == table


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("rule", ROUTES, ids=lambda rule: f"{rule.method} {rule.path}")
async def test_route_allows_exactly_the_roles_of_the_table(api: Api, rule: Rule, actor: str) -> None:
    target = await api.create_user("rbac-target", Role.WORKER)
    headers = {} if actor == ANONYMOUS else await api.actor(Role(actor))
    path = rule.path.format(user_id=target.id)
    body = rule.body(Target(user_id=target.id)) if rule.body else None
    response = await api.client.request(rule.method, path, json=body, headers=headers)
    if actor in rule.allowed:
        assert response.status_code < 400, response.text
    elif actor == ANONYMOUS:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthenticated"
    else:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
