"""GET /metrics: the API's Prometheus metrics, beside the efficiency endpoints under /metrics/…."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from core.models import Role
from core.settings import ApiSettings
from tests.support.api import Api, make_settings, running_api
from tests.support.db import DIALECT_FREE, Database

pytestmark = DIALECT_FREE

TOKEN = "scrape-" + "t" * 40


async def scrape(api: Api, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, keyed by name and sorted labels."""
    response = await api.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str, status: str) -> float:
    key = ("shopfloor_api_requests_total", (("method", "GET"), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


async def with_api_settings(database: Database, api_settings: ApiSettings) -> AsyncIterator[Api]:
    settings = make_settings(database.url).model_copy(update={"api": api_settings})
    async with running_api(database, settings) as api:
        yield api


async def test_requests_are_counted_by_route_template_and_status(api: Api) -> None:
    headers = await api.actor(Role.PLANNER)
    for work_order_id in (123456, 654321):
        assert (await api.client.get(f"/workorders/{work_order_id}", headers=headers)).status_code == 404
    assert (await api.client.get("/health")).status_code == 200

    samples = await scrape(api)

    assert requests_total(samples, "/workorders/{work_order_id}", "404") == 2
    assert requests_total(samples, "/health", "200") == 1
    assert not any("123456" in str(labels) for _, labels in samples)
    latency = ("shopfloor_api_request_seconds_count", (("method", "GET"), ("route", "/workorders/{work_order_id}")))
    assert samples[latency] == 2


async def test_unknown_paths_share_one_label(api: Api) -> None:
    for path in ("/wp-login.php", "/.env", "/a/b/c"):
        assert (await api.client.get(path)).status_code == 404
    samples = await scrape(api)
    assert requests_total(samples, "<unmatched>", "404") == 3
    assert not any("wp-login" in str(labels) for _, labels in samples)


async def test_the_metrics_summary_endpoint_still_works_beside_it(api: Api) -> None:
    headers = await api.actor(Role.PLANNER)
    response = await api.client.get(
        "/metrics/summary", params={"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert "work_orders" in response.json()
    samples = await scrape(api)
    assert requests_total(samples, "/metrics/summary", "200") == 1


async def test_metrics_stay_out_of_the_openapi_schema(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths
    assert "/metrics/summary" in paths


async def test_requests_in_progress_and_pool_figures_are_exposed(api: Api) -> None:
    samples = await scrape(api)
    # The scrape itself is the one request in flight while the text is made.
    assert samples[("shopfloor_api_requests_in_progress", (("method", "GET"), ("route", "/metrics")))] == 1
    assert ("shopfloor_api_db_pool_size", ()) in samples
    assert ("shopfloor_api_db_pool_checked_out", ()) in samples


@pytest.fixture
async def token_api(database: Database) -> AsyncIterator[Api]:
    async for value in with_api_settings(database, ApiSettings(api_metrics_token=SecretStr(TOKEN))):
        yield value


async def test_a_metrics_token_is_required_when_set(token_api: Api) -> None:
    missing = await token_api.client.get("/metrics")
    wrong = await token_api.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "metrics_token"
    assert wrong.status_code == 401
    samples = await scrape(token_api, Authorization=f"Bearer {TOKEN}")
    assert requests_total(samples, "/metrics", "401") == 2


@pytest.fixture
async def disabled_api(database: Database) -> AsyncIterator[Api]:
    async for value in with_api_settings(database, ApiSettings(api_metrics_enabled=False)):
        yield value


async def test_metrics_can_be_turned_off(disabled_api: Api) -> None:
    assert (await disabled_api.client.get("/metrics")).status_code == 404
    assert (await disabled_api.client.get("/health")).status_code == 200
