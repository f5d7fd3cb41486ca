"""`make demo` / `shopfloor up` as a newcomer runs them: the whole stack as real processes, readings through the API.

Press-1 (OPC-UA simulator) and assembly-1 (Modbus simulator) reach the database through gateway -> broker ->
ingestor; press-2 publishes MQTT itself. Each run gets its own data folder and a port offset nobody uses.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.supervisor import HOST
from cli.up import Ports, taken_ports

REPO = Path(__file__).resolve().parents[2]
SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")
CHILDREN = ("api", "device", "gateway", "modbus", "opcua", "ingestor", "broker")
# Tags each machine's source surely sends (others vary with the machine's state).
EXPECTED_TAGS = {"press-1": "barrel_temp_c", "assembly-1": "torque_nm", "press-2": "barrel_temp_c"}
START_TIMEOUT_S = 180.0  # includes `make`'s install steps (no-ops when everything is installed)
READINGS_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 90.0
CREDENTIALS = re.compile(r"^\s*(admin|planner|worker)\s+username=(\S+) password=(\S+)$")


def free_offset() -> int:
    """A port offset whose six ports are all free right now."""
    rng = random.Random()
    for _ in range(200):
        offset = rng.randrange(20000, 54000, 7)
        if not taken_ports(Ports.plan(offset)):
            return offset
    raise AssertionError("no free port offset found")


def demo_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SHOPFLOOR_", "DATABASE_", "MQTT_", "INGEST_", "API_", "MAKE", "MFLAGS"))
    }
    # Cheap hashing keeps the seed fast; the test environment is not production, so `up` accepts it.
    env.update(SHOPFLOOR_ENV="test", ARGON2_TIME_COST="1", ARGON2_MEMORY_KIB="1024", LOG_LEVEL="INFO")
    return env


@dataclass
class Run:
    """A running `make demo` / `shopfloor up`, its output collected by a thread."""

    process: subprocess.Popen[str]
    ports: Ports
    lines: list[str] = field(default_factory=list)
    fresh: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.ports.api}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.output():
            if self.process.poll() is not None and self.fresh.empty():
                pytest.fail(f"the demo exited ({self.process.returncode}) before {needle!r}:\n{self.output()[-6000:]}")
            try:
                self.fresh.get(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    pytest.fail(f"no {needle!r} within {timeout_s:g} s:\n{self.output()[-6000:]}")

    def credentials(self) -> dict[str, str]:
        return {match[2]: match[3] for line in self.lines if (match := CREDENTIALS.match(line))}

    def stop(self, target: int) -> int:
        """SIGINT to `target` (a process group id when negative), then wait for the whole run to end."""
        if target < 0:
            os.killpg(-target, signal.SIGINT)
        else:
            os.kill(target, signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"the demo did not stop within {STOP_TIMEOUT_S:g} s:\n{self.output()[-6000:]}")


def start(argv: list[str], ports: Ports) -> Run:
    process = subprocess.Popen(  # noqa: S603 -- our own make target / console script
        argv,
        cwd=REPO,
        env=demo_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it: Ctrl-C goes to the group
    )
    run = Run(process, ports)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            run.lines.append(line.rstrip("\n"))
            run.fresh.put(line)

    threading.Thread(target=pump, name="demo-output", daemon=True).start()
    return run


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Whatever a test started is killed at the end, even when it fails half-way."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
        if run.process.stdout is not None:
            run.process.stdout.close()


def make_demo(data_dir: Path, offset: int, runs: list[Run]) -> Run:
    make = shutil.which("make")
    assert make is not None, "make is not installed"
    args = f"--data-dir {data_dir} --port-offset {offset}"
    run = start([make, "--no-print-directory", "demo", f"DEMO_ARGS={args}"], Ports.plan(offset))
    runs.append(run)
    return run


@contextlib.contextmanager
def login(base: str, username: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


def wait_for_readings(client: httpx.Client, run: Run) -> dict[str, dict[str, float]]:
    """Latest values of every demo machine, once each shows its expected tag (bounded wait)."""
    deadline = time.monotonic() + READINGS_TIMEOUT_S
    latest: dict[str, dict[str, float]] = {}
    while time.monotonic() < deadline:
        machines = client.get("/machines", params={"site": "plant1", "limit": 100})
        assert machines.status_code == 200, machines.text
        ids = {item["code"]: item["id"] for item in machines.json()}
        for code in EXPECTED_TAGS.keys() & ids.keys():
            body = client.get(f"/machines/{ids[code]}/latest").json()
            latest[code] = {value["tag"]: value["value"] for value in body["values"]}
        if all(tag in latest.get(code, {}) for code, tag in EXPECTED_TAGS.items()):
            return latest
        time.sleep(0.5)
    pytest.fail(f"not every machine had readings within {READINGS_TIMEOUT_S:g} s: {latest}\n{run.output()[-6000:]}")


def leftovers(data_dir: Path) -> list[str]:
    """Processes still alive whose environment names the data folder (every child of the stack has it)."""
    found = []
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {command}")
        except OSError:
            continue
    return found


def assert_stopped_cleanly(run: Run, data_dir: Path) -> None:
    output = run.output()
    for name in CHILDREN:
        assert re.search(rf"^up\s+\| {name} stopped$", output, re.MULTILINE), f"{name}:\n{output[-6000:]}"
    assert "killing it" not in output
    assert "shopfloor up: stopped\n" in output + "\n"
    assert "Traceback" not in output
    assert leftovers(data_dir) == []


def shopfloor_up_pid(group: int) -> int:
    """The `shopfloor up` process inside the group `make` leads."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pgrp = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if pgrp == group and any(arg.endswith(b"shopfloor") for arg in argv) and b"up" in argv:
            return int(entry.name)
    raise AssertionError("no `shopfloor up` process in the demo's process group")


@pytest.mark.mosquitto
@pytest.mark.opcua
@pytest.mark.modbus
@pytest.mark.sqlite
def wait_for_answer(client: httpx.Client, url: str) -> dict[str, Any]:
    """A command once its gateway has answered."""
    deadline, command = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        command = client.get(url).json()
        if command["status"] != "sent":
            return dict(command)
        time.sleep(0.1)
    raise AssertionError(f"no answer to the command within 30 s: {command}")


def test_make_demo_shows_readings_from_every_source_and_reuses_its_data(tmp_path: Path, runs: list[Run]) -> None:
    data_dir, offset = tmp_path / "demo-data", free_offset()

    first = make_demo(data_dir, offset, runs)
    first.wait_for_line("api ready", START_TIMEOUT_S)
    assert "Mosquitto" in first.output(), "Mosquitto must be installed for this test (make system-deps)"
    passwords = first.credentials()
    assert set(passwords) == {"admin", "planner", "worker"}, first.output()
    assert f"{first.base}/api-docs" in first.output()
    assert f"{first.base}/ui" in first.output()
    assert httpx.get(f"{first.base}/ui", follow_redirects=True).status_code == 200  # the operator view is served
    # The demo plant's zone, and its commands to the simulated machines are on.
    assert httpx.get(f"{first.base}/config").json() == {"plant_timezone": "Europe/Istanbul", "commands_enabled": True}
    with login(first.base, "admin", passwords["admin"]) as admin:
        latest = wait_for_readings(admin, first)
        machines = {item["code"]: item for item in admin.get("/machines", params={"site": "plant1"}).json()}
        work_orders = admin.get("/workorders").json()
    assert latest["press-1"]["barrel_temp_c"] > 0
    assert machines["press-1"]["ideal_cycle_time_s"] == 12.0
    assert machines["assembly-1"]["ideal_cycle_time_s"] == 8.0
    assert {item["lot_no"] for item in work_orders} >= {"DEMO-001", "DEMO-002", "DEMO-003"}
    # A setpoint goes the whole way: API, broker, gateway, the OPC-UA press, read back, answered through the ingestor.
    with login(first.base, "planner", passwords["planner"]) as planner:
        command = planner.post(
            f"/machines/{machines['press-1']['id']}/commands", json={"tag": "cycle_time_setpoint_s", "value": 14.5}
        )
        assert command.status_code == 202, command.text
        answered = wait_for_answer(planner, f"/machines/{machines['press-1']['id']}/commands/{command.json()['id']}")
    assert (answered["status"], answered["writes"][0]["read_back"]) == ("done", 14.5), answered
    with login(first.base, "worker", passwords["worker"]) as worker:
        assert (
            int(worker.get("/workorders").headers["X-Total-Count"]) >= 3
        )  # a worker sees only what is assigned to them

    # Ctrl-C in a terminal: SIGINT to the whole foreground group (make, uv, shopfloor). make reports the
    # interrupt by dying of SIGINT itself; the stack below it must stop in order and leave nothing behind.
    code = first.stop(-first.process.pid)
    assert code in (0, -signal.SIGINT), first.output()[-3000:]
    assert_stopped_cleanly(first, data_dir)

    second = make_demo(data_dir, offset, runs)
    second.wait_for_line("api ready", START_TIMEOUT_S)
    assert second.credentials() == {}
    assert "Demo users exist already" in second.output()
    assert "passwords were printed at the first run and are not stored" in second.output()
    with login(second.base, "admin", passwords["admin"]) as admin:
        wait_for_readings(admin, second)
    # SIGINT to `shopfloor up` alone: it stops the stack and exits 0, so uv and make exit 0 too.
    code = second.stop(shopfloor_up_pid(second.process.pid))
    assert code == 0, second.output()[-3000:]
    assert_stopped_cleanly(second, data_dir)


@pytest.mark.opcua
@pytest.mark.modbus
@pytest.mark.sqlite
def test_up_with_the_embedded_broker_shows_readings(tmp_path: Path, runs: list[Run]) -> None:
    data_dir, offset = tmp_path / "embedded", free_offset()
    args = ["up", "--data-dir", str(data_dir), "--port-offset", str(offset), "--broker", "embedded"]
    run = start([SHOPFLOOR, *args], Ports.plan(offset))
    runs.append(run)
    run.wait_for_line("api ready", START_TIMEOUT_S)
    assert "embedded amqtt (MQTT 3.1.1" in run.output()
    passwords = run.credentials()
    with login(run.base, "admin", passwords["admin"]) as admin:
        wait_for_readings(admin, run)
    assert run.stop(run.process.pid) == 0
    assert_stopped_cleanly(run, data_dir)


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    offset = free_offset()
    ports = Ports.plan(offset)
    with socket.socket() as holder:
        holder.bind((HOST, ports.mqtt))
        holder.listen()
        result = subprocess.run(  # noqa: S603 -- our own console script
            [SHOPFLOOR, "up", "--data-dir", str(tmp_path / "d"), "--port-offset", str(offset)],
            cwd=tmp_path,
            env=demo_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port in use: {ports.mqtt} (mqtt)" in result.stderr
    assert "--port-offset" in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything
