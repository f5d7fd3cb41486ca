"""The gateway's YAML config: a full example parses; every mistake is one ConfigError naming the field.

The `shopfloor gateway` command turns a ConfigError into exit code 2 with its message, so these tests pin the
messages an operator reads. Pydantic places a device's fields under the discriminator value, so the path of the
second tag's data type of the first device (a Modbus one) reads `devices.0.tags.1.data_type`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from core.contract import MachineState
from core.registers import DataType, Order, RegisterType
from gateway.config import (
    BrokerTls,
    ConfigError,
    GatewayConfig,
    ModbusDevice,
    OpcUaDevice,
    load_config,
    parse_config,
)

FULL = """
site: plant1
gateway_id: edge-01
broker:
  host: broker.plant1.local
  port: 8883
  username: gateway
  password: s3cret-from-vault
  tls: true
buffer:
  path: /var/lib/shopfloor/buffer.db
  max_messages: 500000
  max_bytes: 268435456
  max_age_s: 86400
  replay_rate_per_s: 200
publish:
  max_samples_per_message: 100
  flush_interval_s: 0.05
full_refresh_s: 300
metrics_port: 9102
devices:
  - machine: assembly-1
    protocol: modbus
    host: 10.0.0.21
    unit_id: 3
    poll_interval_s: 0.5
    state_tag: station_state
    state_map: {0: "off", 1: idle, 2: running, 3: alarm, 4: setup}
    tags:
      - {name: station_state, address: 0}
      - {name: good_parts, address: 1, data_type: uint32, order: CDAB}
      - {name: torque_nm, register: input, address: 0, data_type: float32, scale: 0.1, deadband: 0.5, range: [0, 80]}
      - {name: energy_wh, address: 3, data_type: int64, order: DCBA, offset: -10}
      - {name: door_closed, register: coil, address: 0, data_type: bool}
      - {name: estop, register: discrete, address: 7, data_type: bool}
  - machine: press-3
    protocol: opcua
    endpoint: opc.tcp://10.0.0.30:4840
    mode: poll
    username: reader
    password: also-secret
    allow_insecure_password: true
    timestamp: server
    max_clock_skew_s: 60
    tags:
      - {name: barrel_temp_c, node_id: "ns=2;s=Machine.BarrelTemp", deadband: 0.2, range: [-20, .inf]}
      - {name: cycle_count, node_id: "ns=2;i=1004", timestamp: gateway}
"""


def full() -> dict[str, Any]:
    raw = yaml.safe_load(FULL)
    assert isinstance(raw, dict)
    return raw


def message_of(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(raw), source="gateway.yaml")
    return str(caught.value)


def test_the_full_example_parses_with_every_field_where_it_was_written() -> None:
    config = parse_config(FULL)
    assert isinstance(config, GatewayConfig)
    assert (config.site, config.gateway_id, config.full_refresh_s) == ("plant1", "edge-01", 300)
    assert (config.broker.host, config.broker.port, config.broker.tls) == ("broker.plant1.local", 8883, BrokerTls())
    assert config.broker.password == SecretStr("s3cret-from-vault")
    assert "s3cret" not in repr(config)
    assert config.buffer.path == Path("/var/lib/shopfloor/buffer.db")
    assert (config.buffer.max_messages, config.buffer.max_bytes, config.buffer.max_age_s) == (500_000, 2**28, 86400)
    assert config.publish.max_samples_per_message == 100

    modbus, opcua = config.devices
    assert isinstance(modbus, ModbusDevice)
    assert (modbus.machine, modbus.host, modbus.port, modbus.unit_id) == ("assembly-1", "10.0.0.21", 502, 3)
    assert modbus.state_map == {
        0: MachineState.OFF,
        1: MachineState.IDLE,
        2: MachineState.RUNNING,
        3: MachineState.ALARM,
        4: MachineState.SETUP,
    }
    torque = modbus.tags[2]
    assert (torque.table, torque.data_type, torque.scale, torque.deadband) == (
        RegisterType.INPUT,
        DataType.FLOAT32,
        0.1,
        0.5,
    )
    assert [tag.count for tag in modbus.tags] == [1, 2, 2, 4, 1, 1]
    assert (modbus.tags[3].order, modbus.tags[3].offset) == (Order.DCBA, -10)
    assert (torque.range, modbus.tags[0].range) == ((0.0, 80.0), None)

    assert isinstance(opcua, OpcUaDevice)
    assert (opcua.endpoint, opcua.mode, opcua.watchdog_s) == ("opc.tcp://10.0.0.30:4840", "poll", 10.0)
    assert [tag.node_id for tag in opcua.tags] == ["ns=2;s=Machine.BarrelTemp", "ns=2;i=1004"]
    assert (opcua.timestamp, opcua.max_clock_skew_s) == ("server", 60.0)
    assert [(tag.timestamp, tag.range) for tag in opcua.tags] == [(None, (-20.0, float("inf"))), ("gateway", None)]


def test_a_minimal_config_gets_the_documented_defaults() -> None:
    config = parse_config(
        "site: plant1\ngateway_id: gw1\ndevices:\n"
        "  - {machine: m1, protocol: opcua, endpoint: 'opc.tcp://plc:4840', tags: [{name: t, node_id: 'ns=2;i=1'}]}\n"
    )
    assert (config.broker.host, config.broker.port, config.full_refresh_s) == ("127.0.0.1", 1883, 60.0)
    assert config.buffer.path == Path("data/gateway-buffer.db")
    opcua = config.devices[0]
    assert isinstance(opcua, OpcUaDevice)
    assert opcua.mode == "subscribe"
    assert (opcua.timestamp, opcua.max_clock_skew_s) == ("source", 300.0)
    assert (opcua.tags[0].timestamp, opcua.tags[0].range) == (None, None)


def test_an_unknown_data_type_names_the_tag_field() -> None:
    raw = full()
    raw["devices"][0]["tags"][1]["data_type"] = "float128"
    message = message_of(raw)
    assert message.startswith("gateway.yaml: devices.0.tags.1.data_type: Input should be 'int16', 'uint16'")


def test_overlapping_registers_name_both_tags_and_the_register() -> None:
    raw = full()
    # good_parts is a uint32 at 1..2; a tag at 2 overlaps its second register.
    raw["devices"][0]["tags"].append({"name": "scrap", "address": 2})
    assert message_of(raw) == ("gateway.yaml: devices.0.tags.6: 'scrap' overlaps 'good_parts' at holding register 2")


def test_the_same_address_in_different_register_tables_does_not_overlap() -> None:
    raw = full()
    # torque_nm is input register 0, door_closed coil 0 and station_state holding 0: all legal together.
    modbus = parse_config(yaml.safe_dump(raw)).devices[0]
    assert isinstance(modbus, ModbusDevice)
    assert {(tag.table, tag.address) for tag in modbus.tags if tag.address == 0} == {
        (RegisterType.HOLDING, 0),
        (RegisterType.INPUT, 0),
        (RegisterType.COIL, 0),
    }


@pytest.mark.parametrize(
    ("device", "field", "expected"),
    [
        (0, "host", "gateway.yaml: devices.0.host: Field required"),
        (1, "endpoint", "gateway.yaml: devices.1.endpoint: Field required"),
    ],
)
def test_a_missing_address_of_the_device_is_named(device: int, field: str, expected: str) -> None:
    raw = full()
    del raw["devices"][device][field]
    assert message_of(raw) == expected


def test_an_endpoint_that_is_not_opc_tcp_is_refused() -> None:
    raw = full()
    raw["devices"][1]["endpoint"] = "http://10.0.0.30:4840"
    assert message_of(raw) == "gateway.yaml: devices.1.endpoint: String should match pattern '^opc\\.tcp://'"


@pytest.mark.parametrize(
    ("path", "value"), [(("site",), "Plant 1"), (("gateway_id",), "-edge"), (("devices", 1, "machine"), "Press_3")]
)
def test_bad_codes_are_refused(path: tuple[str | int, ...], value: str) -> None:
    raw = full()
    target: Any = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    location = ".".join(str(part) for part in path).replace("devices.1", "devices.1")
    assert message_of(raw) == f"gateway.yaml: {location}: String should match pattern '^[a-z0-9][a-z0-9_-]{{0,63}}$'"


def test_a_machine_configured_twice_is_refused() -> None:
    raw = full()
    raw["devices"][1]["machine"] = "assembly-1"
    assert message_of(raw) == ("gateway.yaml: devices: machine assembly-1 is configured more than once")


@pytest.mark.parametrize("register", ["coil", "discrete"])
def test_a_bit_register_must_be_bool(register: str) -> None:
    raw = full()
    raw["devices"][0]["tags"].append({"name": "flag", "register": register, "address": 100, "data_type": "int16"})
    assert message_of(raw) == (f"gateway.yaml: devices.0.tags.6.data_type: a {register} is one bit, so it must be bool")


def test_an_unknown_state_name_in_the_state_map_is_named() -> None:
    raw = full()
    raw["devices"][0]["state_map"][5] = "maintenance"
    assert message_of(raw) == (
        "gateway.yaml: devices.0.state_map.5: Input should be 'running', 'idle', 'setup', 'alarm' or 'off'"
    )


def test_a_state_tag_that_is_not_a_tag_is_refused() -> None:
    raw = full()
    raw["devices"][0]["state_tag"] = "mode"
    assert message_of(raw) == "gateway.yaml: devices.0.state_tag: 'mode' is not one of the tags"


def test_a_tag_name_used_twice_in_a_device_is_refused() -> None:
    raw = full()
    raw["devices"][1]["tags"][1]["name"] = "barrel_temp_c"
    assert message_of(raw) == "gateway.yaml: devices.1.tags: barrel_temp_c appear more than once"


def test_a_tag_past_the_last_register_is_refused() -> None:
    raw = full()
    raw["devices"][0]["tags"].append({"name": "tail", "address": 65535, "data_type": "float32"})
    assert message_of(raw) == "gateway.yaml: devices.0.tags.6: 'tail' runs past register 65535"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda raw: raw["devices"][0].pop("protocol"), "devices.0: Unable to extract tag using discriminator"),
        (
            lambda raw: raw["devices"][0].update(protocol="bacnet"),
            "devices.0: Input tag 'bacnet' found using 'protocol' does not match any of the expected tags",
        ),
        (lambda raw: raw.update(devices=[]), "devices: List should have at least 1 item"),
        (lambda raw: raw["devices"][1].update(tags=[]), "devices.1.tags: List should have at least 1 item"),
        (lambda raw: raw["broker"].update(port=0), "broker.port: Input should be greater than or equal to 1"),
        (lambda raw: raw["buffer"].update(max_bytes=10), "buffer.max_bytes: Input should be greater than or equal"),
    ],
)
def test_other_invalid_fields_are_named(edit: Any, expected: str) -> None:
    raw = full()
    edit(raw)
    assert f"gateway.yaml: {expected}" in message_of(raw)


def test_unknown_keys_are_refused_at_every_level_and_all_are_listed() -> None:
    raw = full()
    raw["colour"] = "red"
    raw["devices"][0]["hots"] = "10.0.0.21"
    raw["devices"][1]["tags"][0]["deadbnd"] = 0.5
    message = message_of(raw)
    assert "colour: Extra inputs are not permitted" in message
    assert "devices.0.hots: Extra inputs are not permitted" in message
    assert "devices.1.tags.0.deadbnd: Extra inputs are not permitted" in message


def test_invalid_yaml_is_a_config_error_with_the_position() -> None:
    with pytest.raises(ConfigError, match=r"(?s)^gateway\.yaml: not valid YAML: .*line 1, column 7"):
        parse_config("site: [plant1\n", source="gateway.yaml")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n", "42\n"])
def test_a_top_level_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^gateway\.yaml: the top level must be a mapping$"):
        parse_config(text, source="gateway.yaml")


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(FULL, encoding="utf-8")
    assert load_config(path) == parse_config(FULL)


def test_an_unreadable_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"


def _invalid_files() -> list[tuple[str, str]]:
    duplicate = full()
    duplicate["devices"][1]["machine"] = "assembly-1"
    bad_type = full()
    bad_type["devices"][0]["tags"][1]["data_type"] = "float128"
    return [
        (yaml.safe_dump(bad_type), "devices.0.tags.1.data_type: Input should be"),
        (yaml.safe_dump(duplicate), "devices: machine assembly-1 is configured more than once"),
        ("site: [plant1\n", "not valid YAML"),
        ("- a\n", "the top level must be a mapping"),
    ]


@pytest.mark.parametrize(("text", "expected"), _invalid_files())
def test_every_invalid_file_gives_one_config_error_led_by_its_path_for_the_cli(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    # Nothing chained: the CLI prints one message, not a pydantic or YAML traceback behind it.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_the_parsed_config_is_frozen() -> None:
    config = parse_config(FULL)
    with pytest.raises(ValueError, match="frozen"):
        config.site = "other"  # type: ignore[misc]  # assigning is the point: the model must refuse it


def test_yaml_off_in_a_state_map_means_the_off_state() -> None:
    text = FULL.replace('state_map: {0: "off",', "state_map: {0: off,")
    assert "{0: off," in text
    assert parse_config(text).devices[0].state_map[0] is MachineState.OFF


def test_a_state_map_needs_a_state_tag() -> None:
    raw = full()
    raw["devices"][0].pop("state_tag")
    assert message_of(raw) == "gateway.yaml: devices.0.state_map: given without a state_tag to apply it to"


def test_a_numeric_tag_named_state_is_refused() -> None:
    raw = full()
    raw["devices"][1]["tags"].append({"name": "state", "node_id": "ns=2;s=Machine.Mode"})
    assert message_of(raw) == (
        "gateway.yaml: devices.1.tags: a tag named 'state' must be the state_tag (the contract reserves the name)"
    )


def test_a_tag_wider_than_one_request_is_refused() -> None:
    raw = full()
    raw["devices"][0]["max_registers_per_request"] = 2
    raw["devices"][0]["tags"].append({"name": "wide", "address": 500, "data_type": "float64"})
    assert "spans 4 registers, more than max_registers_per_request (2)" in message_of(raw)


def test_a_relative_buffer_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    raw = full()
    raw["buffer"]["path"] = "state/buffer.db"
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(raw))
    assert load_config(tmp_path / "gateway.yaml").buffer.path == tmp_path / "state" / "buffer.db"


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_bytes(b"site: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "gateway.yaml")


def test_the_shipped_example_drives_both_simulators() -> None:
    from simulators.modbus import station_tags
    from simulators.opcua import machine_tags, setpoint_tags

    config = load_config(Path(__file__).resolve().parents[2] / "gateway" / "example.yaml")
    press, station = config.devices
    assert isinstance(press, OpcUaDevice)
    served = machine_tags() + setpoint_tags()
    assert [(tag.name, tag.node_id) for tag in press.tags] == [(t["name"], t["node_id"]) for t in served]
    assert [tag.name for tag in station.tags] == [t["name"] for t in station_tags(setpoints=True)]
    # The setpoints are writable on both, within limits, and nothing else is.
    assert [tag.name for tag in press.tags if tag.writable] == [t["name"] for t in setpoint_tags()]
    assert [tag.name for tag in station.tags if tag.writable] == ["target_qty", "cycle_time_setpoint_s"]
    assert config.buffer.path.is_absolute()


@pytest.mark.parametrize(
    ("device", "bounds", "expected"),
    [
        (0, [50, 10], "devices.0.tags.2.range: min 50 is above max 10"),
        (1, [1.5, -1.5], "devices.1.tags.1.range: min 1.5 is above max -1.5"),
        (1, [float("nan"), 1], "devices.1.tags.1.range: a bound is not a number"),
        (0, [10], "devices.0.tags.2.range.1: Field required"),
        (0, [1, 2, 3], "devices.0.tags.2.range: Tuple should have at most 2 items"),
        (1, "0..10", "devices.1.tags.1.range: Input should be a valid tuple"),
    ],
)
def test_an_engineering_range_must_be_min_then_max(device: int, bounds: object, expected: str) -> None:
    raw = full()
    tag = raw["devices"][device]["tags"][2 if device == 0 else 1]
    tag["range"] = bounds
    assert f"gateway.yaml: {expected}" in message_of(raw)


def test_a_range_of_one_value_is_allowed_and_survives_the_yaml_round_trip() -> None:
    raw = full()
    raw["devices"][0]["tags"][0]["range"] = [4, 4]
    config = parse_config(yaml.safe_dump(raw))
    assert parse_config(config.to_yaml()) == config
    assert config.devices[0].tags[0].range == (4.0, 4.0)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda device: device.update(timestamp="plc"), "devices.1.timestamp: Input should be 'source', 'server'"),
        (
            lambda device: device["tags"][0].update(timestamp="local"),
            "devices.1.tags.0.timestamp: Input should be 'source', 'server'",
        ),
        (
            lambda device: device.update(max_clock_skew_s=0),
            "devices.1.max_clock_skew_s: Input should be greater than 0",
        ),
        (
            lambda device: device.update(max_clock_skew_s=-5),
            "devices.1.max_clock_skew_s: Input should be greater than 0",
        ),
    ],
)
def test_timestamp_modes_and_the_skew_guard_are_checked(edit: Any, expected: str) -> None:
    raw = full()
    edit(raw["devices"][1])
    assert f"gateway.yaml: {expected}" in message_of(raw)


def test_timestamp_settings_are_opc_ua_only() -> None:
    raw = full()
    raw["devices"][0]["tags"][0]["timestamp"] = "gateway"
    assert "devices.0.tags.0.timestamp: Extra inputs are not permitted" in message_of(raw)
