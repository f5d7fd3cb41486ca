"""Commands through real Mosquitto, the real gateway and both simulators: a plain MQTT client publishes on the
command topic as the API would, and reads the gateway's answer on the result topic.

One broker, one gateway and one simulator of each protocol serve the module; each test uses its own command ids.
The module's broker runs our config without its logins, so any machine code will do; the last test uses the session's
broker with the production rules, which refuse the command topics to a gateway login whose entry names no machines.
(tests/integration/test_commands.py goes the whole way round on the production rules, with a login that has them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.commands import COMMAND_RESULT_FILTER, command_topic
from core.contract import telemetry_topic
from core.registers import Order
from gateway.config import ModbusDevice
from gateway.service import Gateway
from gateway.sources.modbus import ModbusSource
from simulators.modbus import ModbusStation, station_device, station_tags
from simulators.opcua import InjectionMachineServer, machine_tags, setpoint_tags
from tests.integration.test_gateway import Observed, gateway_settings, modbus, opcua, running_gateway
from tests.support.logs import logged_events
from tests.support.mosquitto import MosquittoBroker, running_mosquitto
from tests.support.pipeline import PASSWORDS, SITE, unique

pytestmark = [pytest.mark.mosquitto, pytest.mark.modbus, pytest.mark.opcua]

STATION, PRESS = "station-cmd", "press-cmd"
ANSWER_S = 10.0


@pytest.fixture(scope="module")
def open_broker() -> Iterator[MosquittoBroker]:
    """Our Mosquitto config without the logins plugin (anonymous, loopback only)."""
    with running_mosquitto(anonymous=True) as server:
        yield server


class Results:
    """The command results seen on the broker, by command id."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.arrived = asyncio.Condition()

    async def collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(COMMAND_RESULT_FILTER) and isinstance(message.payload, bytes):
                result = orjson.loads(message.payload)
                async with self.arrived:
                    self.by_id[result["id"]].append(result)
                    self.arrived.notify_all()

    async def wait(self, command_id: uuid.UUID, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(ANSWER_S), self.arrived:
            await self.arrived.wait_for(lambda: len(self.by_id[str(command_id)]) >= count)
            return self.by_id[str(command_id)]


@dataclass
class Plant:
    broker: MosquittoBroker
    client: aiomqtt.Client
    results: Results
    gateway: Gateway
    station: ModbusStation
    press: InjectionMachineServer

    async def send(self, machine: str, writes: dict[str, Any], *, expires_in_s: float = 30) -> uuid.UUID:
        """Publish a command as the API would (QoS 1, not retained); its id."""
        command_id = uuid.uuid4()
        await self.send_raw(machine, payload(command_id, writes, expires_in_s=expires_in_s))
        return command_id

    async def send_raw(self, machine: str, body: bytes, *, message_expiry_s: int | None = None) -> None:
        """Publish `body`; with `message_expiry_s`, as the API does on MQTT 5 (the broker counts it down)."""
        properties = None
        if message_expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = message_expiry_s
        await self.client.publish(command_topic(SITE, machine), body, qos=1, properties=properties)

    async def answer(self, machine: str, writes: dict[str, Any], **options: Any) -> dict[str, Any]:
        (result,) = await self.results.wait(await self.send(machine, writes, **options))
        return result


def payload(command_id: uuid.UUID, writes: dict[str, Any], *, expires_in_s: float = 30) -> bytes:
    now = datetime.now(UTC)
    return orjson.dumps(
        {
            "id": str(command_id),
            "writes": [{"tag": tag, "value": value} for tag, value in writes.items()],
            "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(),
            "issued_at": now.isoformat(),
            "issued_by": "planner-test",
        }
    )


@contextlib.asynccontextmanager
async def listening(broker: MosquittoBroker, results: Results) -> AsyncIterator[aiomqtt.Client]:
    """A plain client on the whole site: the results, and the telemetry (so the gateway always has a subscriber)."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=unique("api"), protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(f"shopfloor/v1/{SITE}/#", qos=1)
        collector = asyncio.create_task(results.collect(client), name="test:results")
        try:
            yield client
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await collector


def commanded_devices(station: ModbusStation, press: InjectionMachineServer) -> list[dict[str, Any]]:
    return [
        modbus(STATION, station.port) | {"tags": station_tags(setpoints=True)},
        opcua(PRESS, press, "poll") | {"tags": machine_tags() + setpoint_tags()},
    ]


def open_settings(broker: MosquittoBroker, buffer: Path, devices: list[dict[str, Any]]) -> dict[str, Any]:
    settings = gateway_settings(broker, buffer, devices)
    settings["broker"] = {"host": broker.host, "port": broker.port, "client_id": unique("gw")}
    return settings


@pytest.fixture(scope="module")
async def plant(open_broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plant]:
    results = Results()
    buffer = tmp_path_factory.mktemp("commands") / "buffer.db"
    async with (
        ModbusStation("127.0.0.1", 0, seed=3, speed=1) as station,
        InjectionMachineServer(port=0, seed=3, update_interval_s=0.1) as press,
        listening(open_broker, results) as client,
        running_gateway(open_settings(open_broker, buffer, commanded_devices(station, press)), Observed()) as gateway,
    ):
        await asyncio.wait_for(gateway.connected.wait(), timeout=15)
        async with asyncio.timeout(15):
            for machine in (STATION, PRESS):
                while gateway.metrics.device_online.labels(machine)._value.get() != 1:  # noqa: ASYNC110 -- a gauge
                    await asyncio.sleep(0.05)
        yield Plant(open_broker, client, results, gateway, station, press)


async def test_setpoints_are_written_to_the_modbus_station_and_read_back(plant: Plant) -> None:
    before = plant.station.setpoints()
    result = await plant.answer(STATION, {"target_qty": 1234, "cycle_time_setpoint_s": 9.5})
    assert result["status"] == "done", result
    assert result["gateway"] == plant.gateway.config.gateway_id
    assert result["writes"] == [
        {"tag": "target_qty", "previous": before["target_qty"], "read_back": 1234},
        {"tag": "cycle_time_setpoint_s", "previous": before["cycle_time_setpoint_s"], "read_back": 9.5},
    ]
    # The station's own registers, not the gateway's view: the values are there, and the station works to them.
    assert plant.station.setpoints() == {"target_qty": 1234, "cycle_time_setpoint_s": 9.5}
    assert plant.station.model.params.ideal_cycle_s == 9.5


async def test_job_data_is_written_to_the_opcua_nodes_as_their_own_types(plant: Plant) -> None:
    result = await plant.answer(PRESS, {"job_id": 4711, "target_qty": 500, "cycle_time_setpoint_s": 14.25})
    assert result["status"] == "done", result
    assert [(w["tag"], w["read_back"]) for w in result["writes"]] == [
        ("job_id", 4711),
        ("target_qty", 500),
        ("cycle_time_setpoint_s", 14.25),
    ]
    assert plant.press.setpoints() == {"job_id": 4711, "target_qty": 500, "cycle_time_setpoint_s": 14.25}
    async with asyncio.timeout(5):
        while plant.press.machine.params.ideal_cycle_time_s != 14.25:  # noqa: ASYNC110 -- the simulator's tick
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("writes", "expires_in_s", "status", "reason"),
    [
        # Forged on the broker, past the API's own check: the gateway checks the limits again.
        ({"job_id": 1, "target_qty": 200_000}, 30, "refused", "tag target_qty: 200000 is above the maximum 100000"),
        ({"job_id": 2, "barrel_temp_c": 180.0}, 30, "refused", "tag barrel_temp_c: not a writable tag of machine"),
        ({"job_id": 3}, -1, "expired", "expired at"),
    ],
)
async def test_a_command_that_may_not_run_leaves_the_device_as_it_was(
    plant: Plant, writes: dict[str, Any], expires_in_s: float, status: str, reason: str
) -> None:
    before = plant.press.setpoints()
    result = await plant.answer(PRESS, writes, expires_in_s=expires_in_s)
    assert result["status"] == status
    assert reason in result["reason"]
    assert result.get("writes", []) == []
    assert plant.press.setpoints() == before


async def test_a_redelivered_command_is_executed_once_and_answered_twice(
    plant: Plant, caplog: pytest.LogCaptureFixture
) -> None:
    command_id = uuid.uuid4()
    body = payload(command_id, {"target_qty": 42})
    await plant.send_raw(STATION, body)
    (first,) = await plant.results.wait(command_id)
    # Someone else changes the value meanwhile: a second execution would write 42 again.
    assert (await plant.answer(STATION, {"target_qty": 43}))["status"] == "done"
    await plant.send_raw(STATION, body)
    answers = await plant.results.wait(command_id, count=2)
    assert answers[0] == answers[1] == first
    assert first["status"] == "done"
    assert plant.station.setpoints()["target_qty"] == 43
    executed = [event for event in logged_events(caplog, "command_executed") if event["id"] == str(command_id)]
    assert len(executed) == 1
    assert (executed[0]["writes"], executed[0]["issued_by"]) == ({"target_qty": 42}, "planner-test")
    assert plant.gateway.metrics.commands.labels(STATION, "duplicate")._value.get() >= 1


async def test_a_command_sent_while_the_gateway_was_away_is_executed_when_it_is_back(
    plant: Plant, tmp_path: Path
) -> None:
    machine = "station-away"
    devices = [station_device(machine, port=plant.station.port) | {"tags": station_tags(setpoints=True)}]
    settings = open_settings(plant.broker, tmp_path / "buffer.db", devices)
    async with running_gateway(settings, Observed()) as gateway:  # its persistent session subscribes
        await asyncio.wait_for(gateway.connected.wait(), timeout=15)
    command_id = await plant.send(machine, {"target_qty": 777})
    await asyncio.sleep(0.5)
    assert not plant.results.by_id[str(command_id)]  # nobody answered: the broker holds it for the session
    async with running_gateway(settings, Observed()):
        (result,) = await plant.results.wait(command_id)
    assert result["status"] == "done"
    assert plant.station.setpoints()["target_qty"] == 777


async def test_a_source_writes_over_a_shared_rtu_line_with_the_station_s_word_order() -> None:
    # RTU framing through a serial device server: the writes take the line's turn like the polls. The station stands
    # still (speed 1e-6), so what a poll reads afterwards is what was written.
    async with ModbusStation("127.0.0.1", 0, seed=3, speed=1e-6, order=Order.CDAB, transport="rtu_over_tcp") as sim:
        tags = [
            tag | {"writable": {"type": "bool"}} if tag["name"] == "estop" else tag
            for tag in station_tags(Order.CDAB, setpoints=True)
        ]
        config = station_device("rtu-1", port=sim.port, order=Order.CDAB) | {"transport": "rtu_over_tcp", "tags": tags}
        async with ModbusSource(ModbusDevice.model_validate(config)) as source:
            setpoint = await source.write("cycle_time_setpoint_s", 11.5)
            coil = await source.write("estop", True)
            quantity = await source.write("target_qty", 65)
            polled = {value.tag: value.value for value in await source.poll()}
        assert (setpoint.previous, setpoint.read_back) == (8.0, 11.5)
        assert (coil.previous, coil.read_back) == (False, True)
        assert (quantity.previous, quantity.read_back) == (0, 65)
        assert sim.setpoints() == {"target_qty": 65, "cycle_time_setpoint_s": 11.5}
        assert (polled["estop"], polled["target_qty"], polled["cycle_time_setpoint_s"]) == (True, 65, 11.5)


async def test_a_refused_command_subscription_leaves_telemetry_flowing(
    broker: MosquittoBroker, plant: Plant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The production rules (mosquitto/make-logins.sh) give a gateway login the command topics of the machines its
    # entry names only; this login names none.
    machine = unique("station")
    devices = [station_device(machine, port=plant.station.port) | {"tags": station_tags(setpoints=True)}]
    settings = gateway_settings(broker, tmp_path / "buffer.db", devices)
    async with (
        aiomqtt.Client(
            broker.host, broker.port, username="ingestor", password=PASSWORDS["ingestor"],
            identifier=unique("ingestor"), protocol=aiomqtt.ProtocolVersion.V5,
        ) as reader,
        running_gateway(settings, Observed()),
    ):  # fmt: skip
        await reader.subscribe(telemetry_topic(SITE, machine), qos=1)
        async with asyncio.timeout(ANSWER_S):
            await anext(aiter(reader.messages))
    (refusal,) = logged_events(caplog, "command_subscription_refused")
    assert refusal["machine"] == machine
    assert refusal["reason_code"] == 135


def gateway_clock_off_by(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """The gateway's wall clock `offset` away from everyone else's (its monotonic clock is untouched)."""
    monkeypatch.setattr("gateway.service.utcnow", lambda: datetime.now(UTC) + offset)


async def test_a_gateway_whose_clock_is_ahead_still_executes_a_command_in_its_lifetime(
    plant: Plant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # By the gateway's clock this command expired 9.5 minutes ago; the broker's count of its message expiry says
    # it has 30 s left, and that decides.
    gateway_clock_off_by(monkeypatch, timedelta(minutes=10))
    command_id = uuid.uuid4()
    await plant.send_raw(STATION, payload(command_id, {"target_qty": 606}), message_expiry_s=30)
    (result,) = await plant.results.wait(command_id)
    assert result["status"] == "done", result
    assert plant.station.setpoints()["target_qty"] == 606
    (skew,) = [event for event in logged_events(caplog, "command_clock_skew") if event["id"] == str(command_id)]
    assert 590 < skew["skew_s"] < 610


async def test_a_command_whose_message_expiry_ran_out_in_the_gateway_s_queue_is_never_executed(
    plant: Plant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # By this gateway's clock (10 minutes behind) the command has 10 minutes left; the broker's count of its message
    # expiry, carried on by the gateway while the command waited behind others, ran out half a second ago.
    gateway_clock_off_by(monkeypatch, -timedelta(minutes=10))
    before = plant.station.setpoints()["target_qty"]
    command_id = uuid.uuid4()
    body = payload(command_id, {"target_qty": before + 1})
    await plant.gateway.handle_command(STATION, body, deadline=time.monotonic() - 0.5)
    (result,) = await plant.results.wait(command_id)
    assert result["status"] == "expired", result
    assert "ran out before it could be executed" in result["reason"]
    assert plant.station.setpoints()["target_qty"] == before
