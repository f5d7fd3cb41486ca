"""node-opcua, a third-party OPC-UA stack, for the interoperability tier: a secured server and a one-shot client.

`nodeopcua/server.mjs` serves a press whose values change every 100 ms and prints each value it writes; it accepts
only the client certificates given when it starts (copied into its PKI folder's `trusted/certs`);
`nodeopcua/client.mjs` reads nodes of a secured server once and prints them as JSON. Both come from npm at the
versions pinned in `nodeopcua/package-lock.json` (`make nodeopcua-deps`, or installed here on first use). If node,
npm or the server is missing or does not start, ServiceUnavailable: the tier fails, never skips.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.support.npm import node_tool, npm_ci
from tests.support.postgres import ServiceUnavailable, free_port

SERVER_DIR = Path(__file__).with_name("nodeopcua")
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 60.0
# The server's ApplicationURI (in its certificate) and its tags: gateway tag -> node id.
SERVER_APPLICATION_URI = "urn:shopfloor:test:nodeopcua-server"
SERVER_TAGS = {
    "counter": "ns=1;s=Press.Counter",
    "temperature": "ns=1;s=Press.Temperature",
    "state": "ns=1;s=Press.State",
}
SERVER_STATES = {1: "idle", 2: "running"}


def install_nodeopcua() -> None:
    """Install the pinned node-opcua (`npm ci`) unless it is installed already."""
    npm_ci(SERVER_DIR, "node-opcua interop")


@dataclass(frozen=True)
class NodeOpcUaServer:
    """A running node-opcua server: where to connect, its certificate, and the values it wrote."""

    endpoint: str
    certificate: Path
    user: str
    password: str
    log_file: Path
    # Client certificates the server refused (node-opcua keeps them here).
    rejected: Path

    def written(self) -> list[tuple[datetime, str, float]]:
        """Every `(source timestamp, tag, value)` the server has written so far."""
        values = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "VALUE":
                values.append((datetime.fromisoformat(parts[1]), parts[2], float(parts[3])))
        return values


def _wait_until_ready(process: subprocess.Popen[bytes], log_file: Path, port: int) -> Path:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        lines = log_file.read_text(errors="replace").splitlines()
        for line in lines:
            if line.startswith(f"READY {port} "):
                return Path(line.split(" ", 2)[2])
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"the node-opcua server exited with status {process.returncode} at start:\n" + "\n".join(lines)[-3000:]
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the node-opcua server did not print READY within {START_TIMEOUT_S} s:\n" + "\n".join(lines)[-3000:]
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
def running_nodeopcua_server(
    folder: Path, *, user: str, password: str, trusted_clients: Sequence[Path] = ()
) -> Iterator[NodeOpcUaServer]:
    """Start the node-opcua server (Basic256Sha256 SignAndEncrypt, one login) with its PKI in `folder`; stop it.

    `trusted_clients`: the client certificate files (DER) it accepts; any other client certificate is refused (and
    lands in `folder/pki/rejected`).
    """
    node = node_tool("node", "node-opcua interop")
    install_nodeopcua()
    trusted = folder / "pki" / "trusted" / "certs"
    trusted.mkdir(parents=True, exist_ok=True)
    for index, certificate in enumerate(trusted_clients):
        shutil.copyfile(certificate, trusted / f"client-{index}.der")
    log_file = folder / "server.log"
    port = free_port()
    with log_file.open("wb") as log:
        try:
            process = subprocess.Popen(  # noqa: S603 -- fixed binary and our own script, no shell
                [node, "server.mjs", str(port), str(folder / "pki"), user, password],
                cwd=SERVER_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except OSError as error:
            raise ServiceUnavailable(f"the node-opcua server could not be started: {error}") from None
        try:
            certificate = _wait_until_ready(process, log_file, port)
            yield NodeOpcUaServer(
                f"opc.tcp://{HOST}:{port}", certificate, user, password, log_file, folder / "pki" / "rejected"
            )
        finally:
            _stop(process)


def nodeopcua_read(
    endpoint: str, node_ids: Sequence[str], *, policy: str, mode: str, pki: Path, user: str, password: str
) -> dict[str, dict[str, object]]:
    """Read nodes once with node-opcua's client: `{node id: {"value", "status", "sourceTimestamp"}}`.

    AssertionError with the client's message when it cannot connect or read; ServiceUnavailable when node is missing.
    """
    node = node_tool("node", "node-opcua interop")
    install_nodeopcua()
    result = subprocess.run(  # noqa: S603 -- fixed binary and our own script, no shell
        [node, "client.mjs", endpoint, policy, mode, str(pki), user, password, *node_ids],
        cwd=SERVER_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=CLIENT_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise AssertionError(f"node-opcua client failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"node-opcua client printed no result: {result.stdout[-2000:]}")
    values: dict[str, dict[str, object]] = json.loads(lines[-1])
    return values
