"""The browser tier's shared parts: the system Chromium (never a downloaded one) and `shopfloor api` as a process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.factories import TEST_PASSWORDS
from tests.support.postgres import free_port

CHROMIUM = Path("/usr/bin/chromium")
# No network chatter of the browser's own: the tests talk to 127.0.0.1 only.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")
START_TIMEOUT_S = 30


def require_chromium() -> None:
    """Fail (never skip) with the command that installs the browser."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make system-deps` (Debian package chromium)")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The system Chromium, launched headless by Playwright."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def serve_api(database_url: str, folder: Path, settings: Mapping[str, str] | None = None) -> Iterator[str]:
    """`shopfloor api` on a free port over `database_url`, run in `folder` (no developer's .env in the way), with
    `settings` as extra environment variables; yields its base URL and stops it afterwards. For a fixture:
    `yield from serve_api(url, tmp_path)`."""
    port = free_port()
    env = {
        **os.environ,
        "SHOPFLOOR_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "b" * 48,
        "LOG_FORMAT": "console",
        "ARGON2_TIME_COST": str(TEST_PASSWORDS.argon2_time_cost),
        "ARGON2_MEMORY_KIB": str(TEST_PASSWORDS.argon2_memory_kib),
        **(settings or {}),
    }
    log_path = folder / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 -- our own console script, fixed arguments
            [SHOPFLOOR, "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"shopfloor api exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"shopfloor api did not answer /health within {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
