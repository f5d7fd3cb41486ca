"""Liveness, readiness, OpenAPI and CORS."""

from __future__ import annotations

from httpx import ASGITransport, AsyncClient

from api.app import create_app
from api.context import context_of
from core.schema import head_revisions, upgrade
from tests.support.api import Api, make_settings


async def test_health_answers(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_database_is_at_head(api: Api) -> None:
    response = await api.client.get("/ready")
    assert response.status_code == 200
    assert response.json()["schema_revision"] == sorted(head_revisions())


async def test_not_ready_before_migrations(empty_database_url: str) -> None:
    app = create_app(make_settings(empty_database_url))
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
        before = await client.get("/ready")
        upgrade(empty_database_url)
        after = await client.get("/ready")
    await context_of(app).engine.dispose()
    assert before.status_code == 503
    assert before.json()["code"] == "schema_outdated"
    assert "shopfloor migrate" in before.json()["detail"]
    assert after.status_code == 200


async def test_not_ready_when_database_is_unreachable() -> None:
    app = create_app(make_settings("postgresql://nobody@127.0.0.1:1/none"))
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
        response = await client.get("/ready")
    await context_of(app).engine.dispose()
    assert response.status_code == 503
    assert response.json()["code"] == "database_unreachable"
    assert "nobody" not in response.text


async def test_openapi_has_tags_summaries_and_the_password_flow(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert {tag["name"] for tag in spec["tags"]} >= {"auth", "users", "health"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("tags"), f"{method} {path} has no tag"
            assert operation.get("description") or operation.get("summary"), f"{method} {path} has no docstring"
    flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/auth/login"
    login_body = spec["paths"]["/auth/login"]["post"]["requestBody"]["content"]
    assert {"application/x-www-form-urlencoded", "application/json"} <= login_body.keys()


async def test_swagger_ui_is_served(api: Api) -> None:
    response = await api.client.get("/api-docs")
    assert response.status_code == 200
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


async def test_cors_allows_only_configured_origins(database_url: str) -> None:
    settings = make_settings(database_url)
    settings.api.cors_origins = ["https://mobile.example"]
    app = create_app(settings)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
        allowed = await client.options(
            "/auth/login",
            headers={"Origin": "https://mobile.example", "Access-Control-Request-Method": "POST"},
        )
        refused = await client.options(
            "/auth/login", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
    await context_of(app).engine.dispose()
    assert allowed.headers["access-control-allow-origin"] == "https://mobile.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in refused.headers
