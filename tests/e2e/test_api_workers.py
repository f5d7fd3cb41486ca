"""`shopfloor api` with API_WORKERS=2: worker processes on one socket, both serving, restarted, stopped by SIGTERM,
and /metrics counting every worker's requests whichever worker answers it.

Which process serves a connection is read from the kernel, not from the app: the connection's server-side socket
(found in /proc/net/tcp by the client's port) is an open file of exactly one worker (/proc/PID/fd).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.lifecycle import read_ready_file
from tests.e2e.test_cli import SHOPFLOOR, cli_env, shopfloor
from tests.support.postgres import free_port


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (multiprocessing's resource tracker included)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.add(int(entry.name))
    return found


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets `pid` has open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def server_side_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of the TCP connection from `client_port` to `server_port` on 127.0.0.1."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port == client_port:
            return fields[9]
    return None


def serving_pid(server_port: int, connection: socket.socket, workers: set[int]) -> int | None:
    """The worker holding the accepted end of `connection`."""
    inode = server_side_inode(server_port, connection.getsockname()[1])
    owners = [pid for pid in workers if inode is not None and inode in socket_inodes(pid)]
    return owners[0] if len(owners) == 1 else None


def get_health(connection: socket.socket) -> bytes:
    """One keep-alive GET /health on a raw connection: the status line."""
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def serving_pids(port: int, workers: set[int], *, connections: int = 24, timeout_s: float = 30) -> set[int]:
    """The workers that answered `connections` connections held open together."""
    opened = [socket.create_connection(("127.0.0.1", port), timeout=timeout_s) for _ in range(connections)]
    try:
        found = set()
        for connection in opened:
            assert get_health(connection) == b"HTTP/1.1 200 OK"
            pid = serving_pid(port, connection, workers)
            if pid is not None:
                found.add(pid)
        return found
    finally:
        for connection in opened:
            connection.close()


def scrape(port: int, workers: set[int]) -> tuple[int | None, str]:
    """GET /metrics on a new connection: the worker that answered it, and the text."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += connection.recv(65536)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += connection.recv(65536)
        return serving_pid(port, connection, workers), body.decode()


def health_count(text: str) -> float:
    """The requests counter of GET /health answered 200, as a scrape reports it."""
    pattern = r'^shopfloor_api_requests_total\{method="GET",route="/health",status="200"\} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def pool_pids(text: str) -> set[int]:
    """The processes whose pool size a scrape reports."""
    return {int(pid) for pid in re.findall(r'^shopfloor_api_db_pool_size\{pid="(\d+)"\} ', text, re.MULTILINE)}


def scrapes_by_worker(port: int, workers: set[int], *, at_least: int = 12) -> dict[int, list[str]]:
    """Scrapes until each worker has answered some (at least `at_least` in all)."""
    answered: dict[int, list[str]] = {}
    for attempt in range(200):
        pid, text = scrape(port, workers)
        if pid is not None:
            answered.setdefault(pid, []).append(text)
        if attempt + 1 >= at_least and set(answered) == workers:
            break
    return answered


def announced_workers(ready_file: Path) -> set[int]:
    """The worker process ids the readiness file names (none while it is absent)."""
    ready = read_ready_file(ready_file)
    workers = ready["workers"] if ready is not None else []
    assert isinstance(workers, list)
    return {int(pid) for pid in workers}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s} s")
        time.sleep(0.2)


def test_two_workers_serve_one_port_are_restarted_and_stop_on_sigterm(empty_database_url: str, tmp_path: Path) -> None:
    env = cli_env(empty_database_url, API_WORKERS="2")
    assert shopfloor("migrate", env=env, cwd=tmp_path).returncode == 0
    port = free_port()
    ready_file = tmp_path / "api.ready"
    process = subprocess.Popen(  # noqa: S603 -- our own console script
        [SHOPFLOOR, "api", "--port", str(port), "--ready-file", str(ready_file)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: read_ready_file(ready_file) is not None or process.poll() is not None, 60, "not ready")
        ready = read_ready_file(ready_file)
        assert ready is not None, "the API exited before it was ready"
        workers = announced_workers(ready_file)
        assert len(workers) == 2
        assert ready["pid"] == process.pid
        assert workers <= children(process.pid)
        # Only the parent bound the port; the workers serve the very socket it passed them.
        listening = socket_inodes(process.pid)
        assert all(listening & socket_inodes(pid) for pid in workers)

        assert serving_pids(port, workers) == workers
        # Each worker answered some of those 24; whichever answers a scrape counts all of them.
        scraped = scrapes_by_worker(port, workers)
        assert set(scraped) == workers
        assert {health_count(text) for texts in scraped.values() for text in texts} == {24.0}
        (text,) = scraped[min(workers)][:1]
        assert pool_pids(text) == workers  # the pool figures: one series per live worker
        assert "shopfloor_api_password_verifications_total 0.0" in text

        # A worker that dies is replaced; the port keeps answering meanwhile.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        survivor = workers - {victim}

        def replaced() -> bool:
            now = announced_workers(ready_file)
            return victim not in now and survivor < now

        # Once the new worker has finished its startup the readiness file names it; it holds the shared socket,
        # and the port answers throughout.
        wait_for(replaced, 120, "no replacement worker announced")
        renewed = announced_workers(ready_file)
        assert len(renewed) == 2
        assert renewed <= children(process.pid)
        assert all(listening & socket_inodes(pid) for pid in renewed)
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
        # The dead worker's counts stay in the sums: the counter never goes back.
        scraped = scrapes_by_worker(port, renewed)
        assert {health_count(text) for texts in scraped.values() for text in texts} == {35.0}
        # ...and its pool figures leave with it.
        assert {frozenset(pool_pids(text)) for texts in scraped.values() for text in texts} == {frozenset(renewed)}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert output.count("Application shutdown complete") >= 2, output
    assert "api_workers_stopped" in output
    assert not ready_file.exists()
    assert not children(process.pid)
