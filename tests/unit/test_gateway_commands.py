"""Commands on the gateway's side: which tags the configuration lets be written, the order of the checks, the
outcome of each case, how a write is encoded (Modbus codec, OPC-UA node type), and a redelivered id answered again
without a second write."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

import aiomqtt
import orjson
import pytest
import yaml
from asyncua import ua

from core.commands import (
    CommandPayload,
    CommandWrite,
    WriteLimits,
    WriteValue,
    command_result_topic,
    command_topic,
    encode_command,
)
from core.registers import DataType, Order, decode
from gateway.commands import CommandOutcome, command_id_of, execute_command, same_value
from gateway.config import ConfigError, GatewayConfig, ModbusDevice, ModbusTag, OpcUaDevice, parse_config
from gateway.service import Gateway
from gateway.sources.base import Source, SourceError, TagValue, WriteFailed, WriteRefused, Written
from gateway.sources.modbus import write_words
from gateway.sources.opcua import variant_for

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
LIMITS = {
    "target_qty": WriteLimits(type="int", min=0, max=1000),
    "speed_pct": WriteLimits(type="float", min=10, max=100),
    "vacuum_on": WriteLimits(type="bool"),
}


def command(*writes: tuple[str, Any], expires_in_s: float = 60, command_id: uuid.UUID | None = None) -> CommandPayload:
    return CommandPayload(
        id=command_id or uuid.uuid4(),
        writes=[CommandWrite(tag=tag, value=value) for tag, value in writes],
        expires_at=NOW + timedelta(seconds=expires_in_s),
        issued_at=NOW - timedelta(seconds=1),
        issued_by="planner-anna",
    )


class FakeDevice:
    """A device whose tags hold values; it may refuse a value for its type, fail a write, or keep an old value."""

    def __init__(self, values: dict[str, WriteValue]) -> None:
        self.held = dict(values)
        self.written: list[tuple[str, WriteValue]] = []
        self.refuse: dict[str, str] = {}
        self.fail: dict[str, str] = {}
        self.stuck: set[str] = set()

    def check_write(self, tag: str, value: WriteValue) -> None:
        if tag in self.refuse:
            raise WriteRefused(self.refuse[tag])

    async def write(self, tag: str, value: WriteValue) -> Written:
        previous = self.held[tag]
        if tag in self.fail:
            raise WriteFailed(self.fail[tag], previous=previous)
        self.written.append((tag, value))
        if tag not in self.stuck:
            self.held[tag] = value
        return Written(previous, self.held[tag])


def device() -> FakeDevice:
    return FakeDevice({"target_qty": 0, "speed_pct": 50.0, "vacuum_on": False})


async def run(payload: CommandPayload, source: FakeDevice | None) -> CommandOutcome:
    return await execute_command(payload, machine="press-1", limits=LIMITS, source=source, now=NOW)


# ---- configuration -----------------------------------------------------------------------------------------------


def config_with(tag: dict[str, Any], *, protocol: str = "modbus", **device: Any) -> str:
    entry: dict[str, Any] = {"machine": "press-1", "protocol": protocol, "tags": [tag], **device}
    if protocol == "modbus":
        entry["host"] = "10.0.0.2"
    else:
        entry["endpoint"] = "opc.tcp://10.0.0.3:4840"
    return yaml.safe_dump({"site": "plant1", "gateway_id": "edge-01", "devices": [entry]})


def test_holding_registers_coils_and_opcua_nodes_can_be_writable() -> None:
    holding = parse_config(config_with({"name": "qty", "address": 3, "writable": {"type": "int", "max": 500}}))
    coil = parse_config(
        config_with(
            {"name": "vac", "register": "coil", "address": 0, "data_type": "bool", "writable": {"type": "bool"}}
        )
    )
    node = parse_config(
        config_with(
            {"name": "job", "node_id": "ns=2;s=Job", "writable": {"type": "int", "allowed": [1, 2]}}, protocol="opcua"
        )
    )
    assert holding.devices[0].tags[0].writable == WriteLimits(type="int", max=500)
    assert coil.devices[0].tags[0].writable == WriteLimits(type="bool")
    assert node.devices[0].tags[0].writable == WriteLimits(type="int", allowed=[1, 2])
    # A config written back to YAML keeps its limits (what `shopfloor up` does with the example).
    assert parse_config(holding.to_yaml()) == holding


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (
            {"name": "t", "register": "input", "address": 0, "writable": {"type": "int"}},
            "devices.0.tags.0.writable: an input register is read-only in Modbus; only holding registers and coils "
            "can be written",
        ),
        (
            {"name": "t", "register": "discrete", "address": 0, "data_type": "bool", "writable": {"type": "bool"}},
            "devices.0.tags.0.writable: a discrete input is read-only in Modbus",
        ),
        (
            {"name": "t", "register": "coil", "address": 0, "data_type": "bool", "writable": {"type": "int"}},
            "devices.0.tags.0.writable: a coil of data_type bool is written as type bool",
        ),
        (
            {"name": "t", "address": 0, "data_type": "int16", "writable": {"type": "bool"}},
            "devices.0.tags.0.writable: type bool needs a coil (or data_type bool), not a int16",
        ),
        (
            {"name": "t", "address": 0, "writable": {"type": "int", "min": 9, "max": 1}},
            "devices.0.tags.0.writable: min 9.0 is above max 1.0",
        ),
        (
            {"name": "t", "address": 0, "writable": {"type": "int", "step": 1}},
            "devices.0.tags.0.writable.step: Extra inputs are not permitted",
        ),
    ],
)
def test_a_tag_that_cannot_be_written_is_refused_at_load(tag: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(config_with(tag))
    assert expected in str(error.value)


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
def test_the_state_tag_cannot_be_writable(protocol: str) -> None:
    tag: dict[str, Any] = {"name": "state", "writable": {"type": "int"}}
    tag |= {"address": 0} if protocol == "modbus" else {"node_id": "ns=2;s=State"}
    with pytest.raises(ConfigError, match=r"tags\.0\.writable: the state tag 'state' cannot be writable"):
        parse_config(config_with(tag, protocol=protocol, state_tag="state"))


# ---- the decision ------------------------------------------------------------------------------------------------


async def test_a_command_within_limits_is_written_in_order_and_read_back() -> None:
    source = device()
    outcome = await run(command(("speed_pct", 75), ("target_qty", 250.0), ("vacuum_on", True)), source)
    assert outcome.status == "done"
    assert outcome.reason is None
    # Each value as its tag's type: 75 for a float tag is 75.0, 250.0 for an int tag is 250.
    assert source.written == [("speed_pct", 75.0), ("target_qty", 250), ("vacuum_on", True)]
    assert [(w.tag, w.previous, w.read_back) for w in outcome.writes] == [
        ("speed_pct", 50.0, 75.0),
        ("target_qty", 0, 250),
        ("vacuum_on", False, True),
    ]


async def test_an_expired_command_is_never_written_even_to_a_connected_device() -> None:
    source = device()
    outcome = await run(command(("target_qty", 5), expires_in_s=0), source)
    assert outcome.status == "expired"
    assert source.written == []


@pytest.mark.parametrize(
    ("expires_in_s", "lifetime_left_s", "status"),
    [
        # The gateway's clock 10 minutes ahead: by it the command expired long ago; by the broker's count it has 30 s.
        (-570, 30.0, "done"),
        # The gateway's clock behind: by it the command has a minute left; its message expiry ran out in the queue.
        (60, 0.0, "expired"),
        (60, -0.5, "expired"),
    ],
)
async def test_a_message_expiry_decides_over_the_gateway_s_clock(
    expires_in_s: float, lifetime_left_s: float, status: str
) -> None:
    source = device()
    outcome = await execute_command(
        command(("target_qty", 5), expires_in_s=expires_in_s),
        machine="press-1",
        limits=LIMITS,
        source=source,
        now=NOW,
        lifetime_left_s=lifetime_left_s,
    )
    assert outcome.status == status
    assert source.written == ([("target_qty", 5)] if status == "done" else [])


@pytest.mark.parametrize(
    ("writes", "reason"),
    [
        ([("target_qty", 5), ("speed_pct", 150)], "tag speed_pct: 150.0 is above the maximum 100"),
        ([("target_qty", 5), ("barrel_temp_c", 200)], "tag barrel_temp_c: not a writable tag of machine press-1"),
        ([("target_qty", 2.5)], "tag target_qty: expects a whole number, not 2.5"),
        ([("vacuum_on", 1)], "tag vacuum_on: expects true or false, not 1"),
    ],
)
async def test_a_refused_write_refuses_the_whole_command_before_anything_is_written(
    writes: list[tuple[str, Any]], reason: str
) -> None:
    source = device()
    outcome = await run(command(*writes), source)
    assert (outcome.status, outcome.reason) == ("refused", reason)
    assert source.written == []


async def test_a_value_the_device_type_cannot_hold_is_refused_before_any_write() -> None:
    source = device()
    source.refuse["speed_pct"] = "100.5 does not fit the register"
    outcome = await run(command(("target_qty", 5), ("speed_pct", 60)), source)
    assert (outcome.status, outcome.reason) == ("refused", "tag speed_pct: 100.5 does not fit the register")
    assert source.written == []


async def test_a_device_that_is_not_connected_fails_the_command() -> None:
    outcome = await run(command(("target_qty", 5)), None)
    assert (outcome.status, outcome.reason) == ("failed", "device not connected")


async def test_limits_are_checked_before_the_connection() -> None:
    outcome = await run(command(("target_qty", -1)), None)
    assert outcome.status == "refused"


async def test_a_device_error_stops_the_command_and_says_what_was_written() -> None:
    source = device()
    source.fail["speed_pct"] = "no answer within 1 s"
    outcome = await run(command(("target_qty", 5), ("speed_pct", 60), ("vacuum_on", True)), source)
    assert outcome.status == "failed"
    assert outcome.reason == "tag speed_pct: no answer within 1 s (already written: target_qty)"
    assert [(w.tag, w.previous, w.read_back) for w in outcome.writes] == [
        ("target_qty", 0, 5),
        ("speed_pct", 50.0, None),
    ]
    assert source.written == [("target_qty", 5)]


async def test_a_read_back_that_differs_fails_the_command() -> None:
    source = device()
    source.stuck.add("target_qty")
    outcome = await run(command(("target_qty", 5), ("speed_pct", 60)), source)
    assert (outcome.status, outcome.reason) == ("failed", "tag target_qty: read back 0 after writing 5")
    assert source.written == [("target_qty", 5)]


@pytest.mark.parametrize(
    ("written", "read_back", "same"),
    [
        (12.3, decode([0x4144, 0xCCCD], DataType.FLOAT32, Order.ABCD), True),  # 12.3 through a float32 register
        (12.3, 12.31, False),
        (5, 5.0, True),
        (16_777_217, 16_777_216.0, False),  # a whole number exactly, float32 cannot hold this one
        (5, 6, False),
        (True, True, True),
        (True, 1, False),
        (0.0, 0.0, True),
    ],
)
def test_read_back_comparison(written: WriteValue, read_back: WriteValue, same: bool) -> None:
    assert same_value(written, read_back) is same


def test_the_id_of_a_broken_command_is_read_when_it_can_be() -> None:
    known = uuid.uuid4()
    assert command_id_of(orjson.dumps({"id": str(known), "writes": "nonsense"})) == known
    assert command_id_of(b"not json") is None
    assert command_id_of(b'{"id": "not-a-uuid"}') is None
    assert command_id_of(b"[1, 2]") is None


# ---- the Modbus codec of a write ---------------------------------------------------------------------------------


def holding(data_type: str, **fields: Any) -> ModbusTag:
    return ModbusTag.model_validate({"name": "t", "address": 0, "data_type": data_type, **fields})


@pytest.mark.parametrize(
    ("tag", "value", "words"),
    [
        (holding("uint16"), 250, [250]),
        (holding("int16", scale=0.1), -12.3, [0xFF85]),  # raw -123
        (holding("uint16", scale=0.5, offset=10), 20, [20]),  # (20 - 10) / 0.5
        (holding("float32", order="CDAB"), 12.3, [0xCCCD, 0x4144]),
        (holding("uint32", order="DCBA"), 0x01020304, [0x0403, 0x0201]),
        (ModbusTag.model_validate({"name": "c", "register": "coil", "address": 0, "data_type": "bool"}), True, True),
    ],
)
def test_a_write_is_encoded_with_the_codec_the_polls_decode_with(
    tag: ModbusTag, value: WriteValue, words: list[int] | bool
) -> None:
    assert write_words(tag, value) == words


@pytest.mark.parametrize(
    ("tag", "value", "reason"),
    [
        (holding("uint16"), 70_000, "70000 does not fit the register: 70000 is out of range for uint16"),
        (holding("uint16"), -1, "-1 does not fit the register"),
        (holding("int16", scale=0.1), 12.34, "12.34 is not a whole step of scale 0.1 and offset 0"),
        (holding("int16", scale=0.1), 5000, "5000 does not fit the register"),
    ],
)
def test_a_value_the_register_cannot_hold_is_refused(tag: ModbusTag, value: WriteValue, reason: str) -> None:
    with pytest.raises(WriteRefused, match=reason):
        write_words(tag, value)


# ---- the gateway: result through the buffer, a redelivered id ------------------------------------------------------


class WritableFake(FakeDevice):
    """A Source that reads nothing and writes to FakeDevice's tags."""

    async def __aenter__(self) -> WritableFake:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def values(self) -> AsyncIterator[list[TagValue]]:
        yield [TagValue("target_qty", self.held["target_qty"], datetime.now(UTC))]
        await asyncio.Event().wait()


def gateway_config(tmp_path: Path) -> GatewayConfig:
    return parse_config(
        f"""
site: plant1
gateway_id: edge-01
broker: {{host: 127.0.0.1, port: 1}}
buffer: {{path: {tmp_path / "buffer.db"}}}
metrics_port: null
devices:
  - machine: press-1
    protocol: modbus
    host: 127.0.0.1
    port: 1
    tags: [{{name: target_qty, address: 0, writable: {{type: int, min: 0, max: 1000}}}}]
  - {{machine: press-2, protocol: modbus, host: 127.0.0.1, port: 1, tags: [{{name: temp, address: 0}}]}}
"""
    )


async def results(gateway: Gateway) -> list[dict[str, Any]]:
    topic = command_result_topic("plant1", "press-1")
    return [orjson.loads(m.payload) for m in await gateway.buffer.peek(100) if m.topic == topic]


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, factory: Callable[[ModbusDevice | OpcUaDevice], Source]
) -> AsyncIterator[Gateway]:
    """A gateway on the config of `gateway_config`, its sources from `factory`, once press-1 is online."""
    gateway, stop = Gateway(gateway_config(tmp_path), source_factory=factory), asyncio.Event()
    running = asyncio.create_task(gateway.run(stop, drain_timeout_s=0.1))
    try:
        async with asyncio.timeout(10):
            while gateway.metrics.device_online.labels("press-1")._value.get() != 1:  # noqa: ASYNC110 -- a gauge
                await asyncio.sleep(0.01)
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)


async def test_the_gateway_answers_through_its_buffer_and_executes_a_redelivered_id_once(tmp_path: Path) -> None:
    fake = WritableFake({"target_qty": 0})

    def factory(device: ModbusDevice | OpcUaDevice) -> Source:
        if device.machine == "press-1":
            return fake
        raise SourceError("press-2 is switched off")

    async with running_gateway(tmp_path, factory) as gateway:
        # The gateway's own clock decides expiry: this one is valid for an hour from now.
        first = command(("target_qty", 300)).model_copy(update={"expires_at": datetime.now(UTC) + timedelta(hours=1)})
        await gateway.handle_command("press-1", encode_command(first))
        await gateway.handle_command("press-1", encode_command(first))
        broken_id = uuid.uuid4()
        await gateway.handle_command("press-1", orjson.dumps({"id": str(broken_id), "writes": []}))
        await gateway.handle_command("press-1", b"\xff not json")
        answered = await results(gateway)
    assert fake.written == [("target_qty", 300)]  # once, although delivered twice
    assert [(r["id"], r["status"]) for r in answered] == [
        (str(first.id), "done"),
        (str(first.id), "done"),
        (str(broken_id), "refused"),
    ]
    assert answered[0] == answered[1]
    assert answered[0]["gateway"] == "edge-01"
    assert answered[0]["writes"] == [{"tag": "target_qty", "previous": 0, "read_back": 300}]
    assert "writes" in answered[2]["reason"]
    commands = gateway.metrics.commands
    assert commands.labels("press-1", "done")._value.get() == 1
    assert commands.labels("press-1", "duplicate")._value.get() == 1
    assert commands.labels("press-1", "refused")._value.get() == 1
    assert commands.labels("press-1", "invalid")._value.get() == 1


# ---- the OPC-UA encoding of a write ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant_type", "value", "expected"),
    [
        (ua.VariantType.UInt32, 4711.0, ua.Variant(4711, ua.VariantType.UInt32)),
        (ua.VariantType.Int16, -5, ua.Variant(-5, ua.VariantType.Int16)),
        (ua.VariantType.Double, 12, ua.Variant(12.0, ua.VariantType.Double)),
        (ua.VariantType.Float, 0.5, ua.Variant(0.5, ua.VariantType.Float)),
        (ua.VariantType.Boolean, True, ua.Variant(True, ua.VariantType.Boolean)),
    ],
)
def test_a_write_takes_the_node_s_own_type(variant_type: ua.VariantType, value: WriteValue, expected: Any) -> None:
    assert variant_for(variant_type, value) == expected


@pytest.mark.parametrize(
    ("variant_type", "value", "reason"),
    [
        (ua.VariantType.UInt16, 70_000, "outside the range of its UInt16 node"),
        (ua.VariantType.Byte, -1, "outside the range of its Byte node"),
        (ua.VariantType.Int32, 2.5, "not a whole number"),
        (ua.VariantType.Double, True, "a boolean cannot be written to its Double node"),
        (ua.VariantType.Boolean, 1, "not a boolean"),
        (ua.VariantType.Float, 1e39, "beyond the range of its Float node"),
        (None, 1, "not a boolean or number type"),
    ],
)
def test_a_value_the_node_cannot_hold_is_refused(
    variant_type: ua.VariantType | None, value: WriteValue, reason: str
) -> None:
    with pytest.raises(WriteRefused, match=reason):
        variant_for(variant_type, value)


@pytest.mark.parametrize(
    ("expires_in_s", "expiry_left_s", "status"),
    [
        # By the gateway's clock it expired a second ago; the broker's count says 3 s: 4 s apart, the clocks agree,
        # and the shorter lifetime wins.
        (-1, 3.0, "expired"),
        (3, -0.5, "expired"),
        (20, 22.0, "done"),
    ],
)
async def test_while_the_clocks_agree_the_shorter_lifetime_wins(
    tmp_path: Path, expires_in_s: float, expiry_left_s: float, status: str
) -> None:
    fake = WritableFake({"target_qty": 0})
    async with running_gateway(tmp_path, lambda device: fake) as gateway:
        sent = command(("target_qty", 7)).model_copy(
            update={"expires_at": datetime.now(UTC) + timedelta(seconds=expires_in_s)}
        )
        await gateway.handle_command("press-1", encode_command(sent), deadline=time.monotonic() + expiry_left_s)
        answered = await results(gateway)
    assert [(r["id"], r["status"]) for r in answered] == [(str(sent.id), status)]
    assert fake.written == ([("target_qty", 7)] if status == "done" else [])


class ArrivingCommands:
    """What the gateway's MQTT client hands it: `bodies` on press-1's command topic, then the end of the stream."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies

    @property
    async def messages(self) -> AsyncIterator[Any]:
        for body in self.bodies:
            yield SimpleNamespace(topic=command_topic("plant1", "press-1"), payload=body, properties=None)


async def test_a_command_that_finds_the_queue_full_is_refused_at_once(tmp_path: Path) -> None:
    fake = WritableFake({"target_qty": 0})
    async with running_gateway(tmp_path, lambda device: fake) as gateway:
        # A queue of one that nobody takes from (the worker waits on the gateway's own): the second one finds it full.
        gateway._commands = asyncio.Queue(maxsize=1)
        waiting, late = command(("target_qty", 1)), command(("target_qty", 2))
        arriving = ArrivingCommands([encode_command(waiting), encode_command(late)])
        with pytest.raises(aiomqtt.MqttError, match="stream ended"):
            await gateway._receive_commands(arriving)  # type: ignore[arg-type]
        answered = await results(gateway)
    assert gateway._commands.qsize() == 1
    assert [(r["id"], r["status"]) for r in answered] == [(str(late.id), "refused")]
    assert "commands waiting" in answered[0]["reason"]
    assert fake.written == []
