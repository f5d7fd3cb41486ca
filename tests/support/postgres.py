"""A throwaway PostgreSQL for the test session: initdb + pg_ctl in a temporary folder, on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


class ServiceUnavailable(RuntimeError):
    """A real service the tests need could not be started; the tier fails rather than skips."""


@dataclass(frozen=True)
class PostgresServer:
    """Where the throwaway server listens, and how to stop and start it again (for outage tests)."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path
    log_file: Path
    options: str

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for one database on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        """Shut the server down fast (open connections are cut)."""
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop")

    def start(self) -> None:
        """Start the server again on the same port with the same data."""
        pg_ctl = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file)]
        _run([*pg_ctl, "-w", "-t", "60", "-o", self.options, "start"], "pg_ctl start")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")


def _as_postgres(args: list[str]) -> list[str]:
    # The server refuses to run as root, so root runs it as the `postgres` system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(_as_postgres(args), capture_output=True, text=True, check=False)  # noqa: S603 -- fixed binaries, no shell
    if result.returncode != 0:
        raise ServiceUnavailable(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL cluster and stop it (and delete it) afterwards."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="shopfloor-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    server = PostgresServer("127.0.0.1", port, "postgres", bin_dir, data, log, options)
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        _run([*initdb, "--no-locale", "--no-sync"], "initdb")
        server.start()
    except ServiceUnavailable as error:
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceUnavailable(f"{error}\n{detail}") from None
    try:
        yield server
    finally:
        subprocess.run(  # noqa: S603 -- fixed binaries, no shell
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
