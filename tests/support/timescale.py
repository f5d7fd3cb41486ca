"""PostgreSQL 17 + TimescaleDB compiled to WASM (PGlite), served on a free local port for the timescale tier.

`timescale/serve.mjs` does the serving; see its header for what it changes compared with pglite-socket. The
server has ONE backend: clients take turns (a second connection waits up to 10 s for the first to close, then
gets SQLSTATE 53300), every URL lands in database `template1`, any password is accepted, no background
workers run (call `run_job()` to run a policy), and `DROP EXTENSION timescaledb` cannot be undone until the
server restarts.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.postgres import ServiceUnavailable, free_port

SERVER_DIR = Path(__file__).with_name("timescale")
HOST = "127.0.0.1"
INSTALL_TIMEOUT_S = 600.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServiceUnavailable(f"{name} not found: the timescale tier needs Node.js 20+ with npm")
    return found


def _installed() -> bool:
    # npm writes node_modules/.package-lock.json last, so a half-finished install does not count; a lock file
    # changed since (a version bump) means installing again.
    marker = SERVER_DIR / "node_modules" / ".package-lock.json"
    lock = SERVER_DIR / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


def install_server() -> None:
    """Install the pinned npm packages of the WASM server (`npm ci`) unless they are installed already."""
    if _installed():
        return
    npm = _tool("npm")
    try:
        result = subprocess.run(  # noqa: S603 -- fixed arguments, no shell
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=SERVER_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(f"npm ci in {SERVER_DIR} took longer than {INSTALL_TIMEOUT_S} s") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise ServiceUnavailable(f"npm ci in {SERVER_DIR} failed ({result.returncode}):\n{output}")


def _wait_until_ready(process: subprocess.Popen[bytes], log_file: Path, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        lines = log_file.read_text(errors="replace").splitlines()
        if f"READY {port}" in lines:
            return
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"the TimescaleDB WASM server exited with status {process.returncode} at start:\n"
                + "\n".join(lines)[-3000:]
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the TimescaleDB WASM server did not print READY {port} within {START_TIMEOUT_S} s:\n"
                + "\n".join(lines)[-3000:]
            )
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_timescale() -> Iterator[str]:
    """Start the TimescaleDB WASM server (installing it first if needed); yield its SQLAlchemy URL; stop it.

    Data lives in memory and is gone when the server stops. ServiceUnavailable if node or npm is missing or the
    server does not start; callers turn that into a failure, never a skip.
    """
    node = _tool("node")
    install_server()
    root = Path(tempfile.mkdtemp(prefix="shopfloor-timescale-"))
    log_file = root / "server.log"
    port = free_port()
    try:
        with log_file.open("wb") as log:
            try:
                process = subprocess.Popen(  # noqa: S603 -- fixed binary and our own script, no shell
                    [node, "serve.mjs", str(port)],
                    cwd=SERVER_DIR,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except OSError as error:
                raise ServiceUnavailable(f"the TimescaleDB WASM server could not be started: {error}") from None
            try:
                _wait_until_ready(process, log_file, port)
                yield f"postgresql://postgres:postgres@{HOST}:{port}/postgres"
            finally:
                _stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)
