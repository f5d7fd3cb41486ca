"""`shopfloor up`'s planning (ports, generated configs) and its supervisor, with tiny fake child commands."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.stack import (
    BASE_PORTS,
    HOST,
    ChildSpec,
    Ports,
    StackError,
    Supervisor,
    amqtt_config,
    gateway_config,
    mosquitto_config,
    port_free,
    taken_ports,
)
from gateway.config import ModbusDevice, OpcUaDevice, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway" / "example.yaml"


# ---- ports -------------------------------------------------------------------------------------------------------


def test_ports_are_the_defaults_shifted_by_the_offset() -> None:
    ports = Ports.plan(100)
    assert dict(ports.items()) == {name: port + 100 for name, port in BASE_PORTS.items()}
    assert Ports.plan().api == 8000
    assert Ports.plan().mqtt == 1883


def test_explicit_api_and_broker_ports_win_over_the_offset() -> None:
    ports = Ports.plan(10, api=18080, mqtt=11883)
    assert (ports.api, ports.mqtt, ports.opcua) == (18080, 11883, 4850)


@pytest.mark.parametrize(("offset", "api"), [(60000, None), (-2000, None), (0, 70000)])
def test_ports_out_of_range_are_refused(offset: int, api: int | None) -> None:
    with pytest.raises(StackError, match="out of range"):
        Ports.plan(offset, api=api)


def test_two_services_on_one_port_are_refused() -> None:
    with pytest.raises(StackError, match="share a port"):
        Ports.plan(0, api=1883)


def test_taken_ports_names_each_service_whose_port_is_held() -> None:
    ports = Ports.plan(0)
    held = {ports.mqtt, ports.gateway_metrics}
    assert taken_ports(ports, is_free=lambda port: port not in held) == [
        ("mqtt", ports.mqtt),
        ("gateway_metrics", ports.gateway_metrics),
    ]


def test_port_free_sees_a_listening_socket() -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not port_free(port)
    assert port_free(port)


# ---- generated configs -------------------------------------------------------------------------------------------


def _options(conf: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in conf.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" ")
            options.setdefault(name, []).append(value)
    return options


def test_the_demo_mosquitto_listens_on_loopback_only_and_persists_in_the_data_folder(tmp_path: Path) -> None:
    options = _options(mosquitto_config(port=11883, data_dir=tmp_path, user="alice"))
    assert options["listener"] == ["11883 127.0.0.1"]
    assert options["allow_anonymous"] == ["true"]
    assert options["persistence"] == ["true"]
    assert options["persistence_location"] == [f"{tmp_path / 'mosquitto'}/"]
    assert options["user"] == ["alice"]
    assert options["log_dest"] == ["stderr"]
    assert int(options["max_inflight_messages"][0]) >= 1000  # the ingestor acknowledges per batch
    assert "password_file" not in options
    assert "acl_file" not in options


def test_the_embedded_broker_binds_loopback_and_allows_anonymous_only() -> None:
    config = yaml.safe_load(amqtt_config(port=11883))
    assert config["listeners"] == {"default": {"type": "tcp", "bind": "127.0.0.1:11883"}}
    assert config["plugins"] == {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_gateway_config_is_the_example_with_the_demo_ports(tmp_path: Path, protocol: str) -> None:
    ports = Ports.plan(7)
    text = gateway_config(
        EXAMPLE.read_text(), ports=ports, protocol=protocol, buffer_path=tmp_path / "gateway-buffer.db"
    )
    config = parse_config(text)  # the gateway's own validation accepts it
    example = parse_config(EXAMPLE.read_text())
    assert (config.broker.host, config.broker.port, config.broker.protocol) == (HOST, ports.mqtt, protocol)
    assert config.broker.username is None
    assert config.broker.password is None
    assert config.buffer.path == tmp_path / "gateway-buffer.db"
    assert config.metrics_port == ports.gateway_metrics
    by_machine = {device.machine: device for device in config.devices}
    opcua, modbus = by_machine["press-1"], by_machine["assembly-1"]
    assert isinstance(opcua, OpcUaDevice)
    assert opcua.endpoint == f"opc.tcp://{HOST}:{ports.opcua}"
    assert isinstance(modbus, ModbusDevice)
    assert (modbus.host, modbus.port) == (HOST, ports.modbus)
    # Everything else (tags, state maps, intervals) is the example's.
    assert [device.tags for device in config.devices] == [device.tags for device in example.devices]
    assert config.site == example.site == "plant1"


# ---- the supervisor ----------------------------------------------------------------------------------------------

# A fake child: says READY, appends "<name> start" / "<name> stop" to a journal, stops on SIGTERM or SIGINT.
SERVE = """
import signal, sys, time
name, journal = sys.argv[1], sys.argv[2]
def stop(*_):
    open(journal, "a").write(name + " stop\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(journal, "a").write(name + " start\\n")
print("READY " + name, flush=True)
while True:
    time.sleep(0.05)
"""


def serving(name: str, journal: Path, **options: object) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", SERVE, name, str(journal)], ready_line="READY", **options)  # type: ignore[arg-type]  # options are ChildSpec's own fields


def script(name: str, code: str, *args: str, **options: object) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", code, *args], **options)  # type: ignore[arg-type]  # ChildSpec's fields


async def run_until(supervisor: Supervisor, condition: asyncio.Event | None = None, *, after_s: float = 0) -> int:
    """Run the supervisor; set stop once everything started (and `condition`, if given) plus `after_s`."""
    stop = asyncio.Event()
    runner = asyncio.create_task(supervisor.run(stop), name="test:supervisor")
    waits = [asyncio.create_task(supervisor.started.wait())]
    if condition is not None:
        waits.append(asyncio.create_task(condition.wait()))
    done, _ = await asyncio.wait([runner, *waits], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if runner not in done:
        await asyncio.wait_for(asyncio.gather(*waits), timeout=30)
        await asyncio.sleep(after_s)
        stop.set()
    for task in waits:
        task.cancel()
    return await asyncio.wait_for(runner, timeout=30)


async def test_children_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", io.StringIO()
    supervisor = Supervisor([serving(name, journal) for name in ("broker", "ingestor", "api")], out=out)
    assert await run_until(supervisor) == 0
    assert journal.read_text().split("\n")[:-1] == [
        "broker start",
        "ingestor start",
        "api start",
        "api stop",
        "ingestor stop",
        "broker stop",
    ]
    text = out.getvalue()
    assert "api      | READY api" in text  # children's lines, prefixed with their name
    assert "up       | stopping: api, ingestor, broker" in text
    for name in ("broker", "ingestor", "api"):
        assert f"up       | {name} stopped\n" in text


async def test_quiet_hides_the_children_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_until(Supervisor([serving("one", tmp_path / "j")], out=out, quiet=True)) == 0
    assert "READY one" not in out.getvalue()
    assert "one ready" in out.getvalue()


async def test_each_child_is_stopped_with_its_own_signal(tmp_path: Path) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntry:\n    print('READY', flush=True)\n"
    code += "    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('got SIGINT', flush=True)\n"
    out = io.StringIO()
    spec = script("amqtt", code, ready_line="READY", stop_signal=signal.SIGINT, stop_timeout_s=5)
    assert await run_until(Supervisor([spec], out=out)) == 0
    assert "got SIGINT" in out.getvalue()
    assert "amqtt stopped\n" in out.getvalue()


async def test_a_child_that_ignores_its_stop_signal_is_killed(tmp_path: Path) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('READY', flush=True)\n"
    code += "time.sleep(60)\n"
    out = io.StringIO()
    spec = script("stubborn", code, ready_line="READY", stop_timeout_s=0.5)
    assert await run_until(Supervisor([spec], out=out)) == 0
    assert "stubborn did not stop within 0.5 s: killing it" in out.getvalue()
    assert f"stubborn stopped with status {-signal.SIGKILL}" in out.getvalue()


async def test_a_child_that_dies_is_restarted_with_backoff(tmp_path: Path) -> None:
    # Dies the first time it runs (no marker yet), serves from then on.
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    code = (
        "import pathlib, sys, time\nmarker = pathlib.Path(sys.argv[1])\nprint('READY', flush=True)\n"
        "if not marker.exists():\n    marker.touch()\n    time.sleep(0.3)\n    sys.exit(3)\n"
        "open(sys.argv[2], 'a').write('second life\\n')\nwhile True:\n    time.sleep(0.05)\n"
    )
    out = io.StringIO()
    supervisor = Supervisor(
        [script("flaky", code, str(marker), str(journal), ready_line="READY")], out=out, backoff_base_s=0.05
    )
    restarted = asyncio.Event()

    async def watch() -> None:
        while not journal.exists():  # noqa: ASYNC110 -- the child writes the file; there is nothing to await
            await asyncio.sleep(0.05)
        restarted.set()

    watcher = asyncio.create_task(watch())
    assert await run_until(supervisor, restarted, after_s=0.2) == 0
    watcher.cancel()
    text = out.getvalue()
    assert "flaky exited with status 3; restart 1 of 3 in 0.05 s" in text
    assert text.count("flaky ready") == 2
    assert "flaky stopped\n" in text


async def test_a_child_that_keeps_dying_stops_the_whole_stack(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", io.StringIO()
    dies = script("ingestor", "import time\nprint('READY', flush=True)\ntime.sleep(0.2)\nraise SystemExit(2)\n",
                  ready_line="READY")  # fmt: skip
    supervisor = Supervisor(
        [serving("broker", journal), dies], out=out, quiet=True, max_restarts=2, backoff_base_s=0.01
    )
    stop = asyncio.Event()
    assert await asyncio.wait_for(supervisor.run(stop), timeout=30) == 1
    text = out.getvalue()
    assert "ingestor exited with status 2; restart 1 of 2" in text
    assert "ingestor exited with status 2; restart 2 of 2" in text
    assert "ingestor exited with status 2 and has died 3 times within 60 s: stopping the stack" in text
    assert journal.read_text() == "broker start\nbroker stop\n"  # the others are stopped too
    assert "ingestor | READY" in text  # quiet mode shows a dead child's last lines, and only those
    assert "READY broker" not in text


async def test_a_child_that_cannot_start_stops_those_already_started(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", io.StringIO()
    broken = script("gateway", "import sys\nprint('bad config', flush=True)\nsys.exit(2)\n", ready_line="READY")
    supervisor = Supervisor([serving("broker", journal), broken, serving("api", journal)], out=out)
    assert await asyncio.wait_for(supervisor.run(asyncio.Event()), timeout=30) == 1
    assert "gateway exited with status 2 while starting" in out.getvalue()
    assert journal.read_text() == "broker start\nbroker stop\n"  # api never started


async def test_a_child_not_ready_in_time_fails_the_start(tmp_path: Path) -> None:
    out = io.StringIO()
    silent = script("api", "import time\ntime.sleep(60)\n", ready_port=1)  # nothing will listen on port 1
    supervisor = Supervisor([silent], out=out, ready_timeout_s=0.5)
    assert await asyncio.wait_for(supervisor.run(asyncio.Event()), timeout=30) == 1
    assert "api was not ready within 0.5 s" in out.getvalue()
    assert "api stopped" in out.getvalue()


async def test_a_missing_program_is_reported(tmp_path: Path) -> None:
    out = io.StringIO()
    spec = ChildSpec("broker", [str(tmp_path / "no-such-broker")], ready_port=1)
    assert await asyncio.wait_for(Supervisor([spec], out=out).run(asyncio.Event()), timeout=30) == 1
    assert "cannot start broker" in out.getvalue()


def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    # The supervisor in a process of its own, with one fake child; then SIGKILL, which it cannot handle.
    program = (
        "import asyncio, sys\nfrom core.stack import ChildSpec, Supervisor, supervise\n"
        "code = 'import time\\nprint(\"READY\", flush=True)\\ntime.sleep(120)\\n'\n"
        "spec = ChildSpec('sleeper', [sys.executable, '-c', code], ready_line='READY')\n"
        "asyncio.run(supervise(Supervisor([spec])))\n"
    )
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(  # noqa: S603 -- the test's own interpreter and program
        [sys.executable, "-c", program], cwd=root, stdout=subprocess.PIPE, text=True
    ) as supervisor:
        assert supervisor.stdout is not None
        line = ""
        deadline = time.monotonic() + 30
        while "sleeper ready" not in line and time.monotonic() < deadline:
            line = supervisor.stdout.readline()
        match = re.search(r"sleeper ready \(pid (\d+)\)", line)
        assert match, line
        child = int(match[1])
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphaned = _alive(child)
        if orphaned:
            os.kill(child, signal.SIGKILL)
        assert not orphaned


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (gone) could reap it


def test_the_mqtt_version_settings_accept_only_5_and_3_1_1() -> None:
    from pydantic import ValidationError

    from core.settings import MqttSettings
    from gateway.config import ConfigError

    assert MqttSettings.model_validate({"mqtt_protocol": "3.1.1"}).mqtt_protocol == "3.1.1"
    with pytest.raises(ValidationError, match="mqtt_protocol"):
        MqttSettings.model_validate({"mqtt_protocol": "4"})
    example = yaml.safe_load(EXAMPLE.read_text())
    example["broker"]["protocol"] = "4"
    with pytest.raises(ConfigError, match=r"broker\.protocol"):
        parse_config(yaml.safe_dump(example))
