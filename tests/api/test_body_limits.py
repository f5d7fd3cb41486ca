"""Request bodies are limited by the bytes that arrive, before authentication and parsing: a declared size over
the limit, and a chunked body (no Content-Length) that grows past it, both get 413 problem+json. Against a real
uvicorn server, where chunked transfer is what the client really sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from core.contract import MAX_PAYLOAD_BYTES
from core.models import Role
from tests.support.api import Api, make_settings, running_api
from tests.support.db import DIALECT_FREE, Database
from tests.support.factories import make_machine
from tests.support.sse import serving

pytestmark = DIALECT_FREE

MIB = 1024 * 1024


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A JSON-looking body of `total` bytes, sent chunked (httpx sets Transfer-Encoding: chunked)."""
    yield b'{"username": "'
    sent = 14
    while sent < total:
        piece = b"a" * min(size, total - sent)
        sent += len(piece)
        yield piece


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/auth/login", "/auth/register"])
async def test_anonymous_chunked_bodies_stop_at_the_limit(committed_database: Database, path: str) -> None:
    settings = make_settings(committed_database.url, api={"max_body_bytes": MIB})
    async with (
        running_api(committed_database, settings) as api,
        serving(api.app) as served,
        httpx.AsyncClient(base_url=served.base_url, timeout=30) as client,
    ):
        chunked = await client.post(path, content=chunks(8 * MIB), headers={"content-type": "application/json"})
        assert_413(chunked)
        # A client announcing 100 MB gets its answer after the headers, without sending them.
        host, port = served.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * MIB}\r\n\r\n{{".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        # The server still answers normally afterwards.
        assert (await client.get("/health")).status_code == 200


async def test_form_logins_are_limited_too(api: Api) -> None:
    body = b"username=x&password=" + b"p" * (api.settings.api.max_body_bytes + 1)
    response = await api.client.post(
        "/auth/login", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_413(response)


async def test_readings_have_their_own_smaller_limit_even_when_chunked(committed_database: Database) -> None:
    async with running_api(committed_database, make_settings(committed_database.url)) as api:
        admin = await api.actor(Role.ADMIN)
        async with api.session() as session:
            machine = await make_machine(session)
        url = f"/machines/{machine.id}/readings"
        async with serving(api.app) as served, httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
            response = await client.post(
                url,
                content=chunks(MAX_PAYLOAD_BYTES + 1),
                headers={**admin, "content-type": "application/json"},
            )
            assert_413(response)
            # Under the limit the same route takes the body (and refuses what is in it on its own terms).
            small = await client.post(url, content=b"{", headers={**admin, "content-type": "application/json"})
            assert small.status_code == 422
