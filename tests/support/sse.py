"""The app on a real uvicorn server (httpx's ASGI transport buffers whole responses), and a small SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from api.context import context_of
from api.server import ApiServer
from tests.support.postgres import free_port

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclass
class Served:
    """A running server: its base URL and the server object (set `should_exit` to stop it)."""

    base_url: str
    server: ApiServer
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop as SIGTERM would and wait until uvicorn has finished."""
        self.server.should_exit = True
        await asyncio.wait_for(asyncio.shield(self.task), timeout=STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[Served]:
    """Serve `app` with uvicorn on a free local port, in this event loop, the way `shopfloor api` does."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = ApiServer(config, streams=context_of(app).streams)
    task = asyncio.create_task(server.serve(), name=f"test:uvicorn:{port}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("uvicorn stopped before it started")
        if time.monotonic() > deadline:
            raise AssertionError(f"uvicorn did not start within {START_TIMEOUT_S} s")
        await asyncio.sleep(0.02)
    served = Served(base_url=f"http://127.0.0.1:{port}", server=server, task=task)
    try:
        yield served
    finally:
        if not task.done():
            await served.stop()


@dataclass
class Block:
    """One block of an event stream (the lines up to a blank line): fields in order, and comments."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    received_at: float = 0.0

    def get(self, name: str) -> str | None:
        """The last value of a field (as the SSE rules read it), or None."""
        values = [value for key, value in self.fields if key == name]
        return values[-1] if values else None

    @property
    def event(self) -> str | None:
        """The event name."""
        return self.get("event")

    @property
    def data(self) -> Any:
        """The JSON of the data field."""
        raw = self.get("data")
        assert raw is not None, self
        return json.loads(raw)


class EventReader:
    """Reads an open `text/event-stream` response block by block."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._lines = response.aiter_lines()

    async def block(self) -> Block:
        """The next block; AssertionError when the stream ends first."""
        block = Block()
        async for line in self._lines:
            if line == "":
                if block.fields or block.comments:
                    block.received_at = time.monotonic()
                    return block
                continue
            if line.startswith(":"):
                block.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            block.fields.append((name, value.removeprefix(" ")))
        raise AssertionError("the event stream ended")

    async def until(
        self, wanted: Callable[[Block], bool], *, within_s: float, seen: list[Block] | None = None
    ) -> Block:
        """The first block that `wanted` accepts, within `within_s` seconds (blocks passed on go to `seen`)."""

        async def look() -> Block:
            while True:
                block = await self.block()
                if wanted(block):
                    return block
                if seen is not None:
                    seen.append(block)

        try:
            return await asyncio.wait_for(look(), timeout=within_s)
        except TimeoutError:
            raise AssertionError(f"no wanted event within {within_s} s (passed over: {seen})") from None

    async def ended(self, *, within_s: float) -> list[Block]:
        """The blocks up to the end of the stream, which must come within `within_s` seconds."""
        blocks: list[Block] = []

        async def drain() -> None:
            while True:
                try:
                    blocks.append(await self.block())
                except AssertionError:
                    return

        await asyncio.wait_for(drain(), timeout=within_s)
        return blocks


def named(name: str) -> Callable[[Block], bool]:
    """A predicate for `EventReader.until`: events of this name."""
    return lambda block: block.event == name
