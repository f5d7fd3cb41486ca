"""A null-modem cable for the RTU tests: two linked pseudo-terminals made by socat."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

# Linux pseudo-terminals refuse parity and 7 data bits (EINVAL from tcsetattr): a pty line runs 8N1.
PTY_LINE = {"baudrate": 19200, "parity": "N", "stopbits": 1, "bytesize": 8}


def socat() -> str:
    path = shutil.which("socat")
    assert path, "socat is missing: apt-get install -y socat (the Makefile's system-deps installs it)"
    return path


@contextlib.asynccontextmanager
async def pty_pair(folder: Path) -> AsyncIterator[tuple[str, str]]:
    """Two linked pseudo-terminals, a null-modem cable: (simulator's end, gateway's end)."""
    station_end, gateway_end = folder / "ttySIM", folder / "ttyGW"
    process = await asyncio.create_subprocess_exec(
        socat(),
        *("-d", "-d", f"pty,raw,echo=0,link={station_end}", f"pty,raw,echo=0,link={gateway_end}"),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (station_end.exists() and gateway_end.exists()):
            assert time.monotonic() < deadline, "socat made no pty pair"
            await asyncio.sleep(0.02)
        yield str(station_end), str(gateway_end)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
