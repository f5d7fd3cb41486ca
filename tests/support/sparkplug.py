"""Eclipse Tahu's JavaScript Sparkplug B client (npm `sparkplug-client`) as an edge node, for the interop tier.

`sparkplug/edge.mjs` runs one scenario against a broker (births, data by alias, a forced seq gap, the births again
when the host asks for them, device and node deaths) and prints every message it publishes. The package comes from
npm at the version pinned in `sparkplug/package-lock.json` (`make sparkplug-deps`, or installed here on first use).
If node, npm or the package is missing, ServiceUnavailable: the tier fails, never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.npm import node_tool, npm_ci

EDGE_DIR = Path(__file__).with_name("sparkplug")
TIER = "Sparkplug interop"


def install_sparkplug_client() -> None:
    """Install the pinned sparkplug-client (`npm ci`) unless it is installed already."""
    npm_ci(EDGE_DIR, TIER)


@dataclass(frozen=True)
class Published:
    """One message the edge node published: its type, seq, device and metrics (name or alias, ts ms, value)."""

    kind: str
    seq: int | None
    device: str | None
    metrics: list[dict[str, Any]]


@dataclass
class EdgeRun:
    """What the edge node printed so far."""

    lines: list[str] = field(default_factory=list)
    stderr: str = ""

    @property
    def published(self) -> list[Published]:
        """Every message published, in order."""
        found = []
        for line in self.lines:
            if line.startswith("PUBLISHED "):
                body = json.loads(line.removeprefix("PUBLISHED "))
                found.append(Published(body["kind"], body["seq"], body["device"], body["metrics"]))
        return found

    @property
    def rebirths(self) -> int:
        """How many Rebirth requests it answered."""
        return self.lines.count("REBIRTH")


@contextlib.asynccontextmanager
async def tahu_edge_node(
    url: str, *, login: str, password: str, group: str, device: str, messages: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, EdgeRun]]:
    """Start edge.mjs; the caller waits on the process. Killed at exit if still running."""
    node = node_tool("node", TIER)
    install_sparkplug_client()
    process = await asyncio.create_subprocess_exec(
        node, "edge.mjs", url, login, password, group, device, str(messages),
        cwd=EDGE_DIR, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    run = EdgeRun()

    async def collect() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            run.lines.append(raw.decode().rstrip("\n"))

    reader = asyncio.create_task(collect(), name="test:tahu-edge-stdout")
    try:
        yield process, run
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await reader
        if process.stderr is not None:
            run.stderr = (await process.stderr.read()).decode(errors="replace")
