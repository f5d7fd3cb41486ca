"""A Modbus device's transport (tcp, rtu, rtu_over_tcp): defaults, settings that do not apply, shared serial lines."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, GatewayConfig, ModbusDevice, parse_config


def modbus(**fields: Any) -> dict[str, Any]:
    return {
        "machine": fields.pop("machine", "press-1"),
        "protocol": "modbus",
        "tags": [{"name": "temp_c", "address": 0}],
        **fields,
    }


def config(*devices: dict[str, Any]) -> GatewayConfig:
    return parse_config(yaml.safe_dump({"site": "plant1", "gateway_id": "gw1", "devices": list(devices)}))


def refusal(*devices: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            yaml.safe_dump({"site": "plant1", "gateway_id": "gw1", "devices": list(devices)}), source="gateway.yaml"
        )
    return str(caught.value)


def only_device(raw: dict[str, Any]) -> ModbusDevice:
    device = config(raw).devices[0]
    assert isinstance(device, ModbusDevice)
    return device


def test_a_device_without_transport_is_tcp_on_port_502_as_before() -> None:
    device = only_device(modbus(host="10.0.0.5"))
    assert (device.transport, device.host, device.port, device.line) == ("tcp", "10.0.0.5", 502, "10.0.0.5:502")
    assert (device.serial_port, device.line_settings, device.line_pause_s) == (None, (None, None, None, None), 0.0)


def test_an_rtu_device_gets_the_serial_line_specs_defaults_and_its_silent_interval() -> None:
    device = only_device(modbus(transport="rtu", serial_port="/dev/ttyUSB0", unit_id=7))
    assert (device.host, device.port, device.line) == (None, None, "/dev/ttyUSB0")
    # 9600 baud, even parity, 1 stop bit, 8 data bits: the Modbus serial line spec's default
    assert device.line_settings == (9600, "E", 1, 8)
    # 3.5 characters of 11 bits (start, 8 data, parity, stop) at 9600 baud
    assert device.line_pause_s == pytest.approx(3.5 * 11 / 9600)


@pytest.mark.parametrize(
    ("line", "pause_s"),
    [
        ({"baudrate": 19200, "parity": "N"}, 3.5 * 10 / 19200),
        ({"baudrate": 9600, "parity": "N", "stopbits": 2}, 3.5 * 11 / 9600),
        ({"baudrate": 38400}, 0.00175),  # above 19200 baud the spec fixes it at 1.75 ms
        ({"baudrate": 115200, "inter_request_delay_ms": 20}, 0.020),
    ],
)
def test_the_line_pause_is_the_delay_asked_for_but_never_below_the_silent_interval(
    line: dict[str, Any], pause_s: float
) -> None:
    device = only_device(modbus(transport="rtu", serial_port="/dev/ttyUSB0", **line))
    assert device.line_pause_s == pytest.approx(pause_s)


def test_rtu_over_tcp_needs_host_and_port_and_pauses_only_when_asked() -> None:
    device = only_device(modbus(transport="rtu_over_tcp", host="10.0.0.9", port=4001))
    assert (device.line, device.line_pause_s) == ("10.0.0.9:4001", 0.0)
    paced = only_device(modbus(transport="rtu_over_tcp", host="10.0.0.9", port=4001, inter_request_delay_ms=50))
    assert paced.line_pause_s == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "10.0.0.5", "serial_port": "/dev/ttyUSB0"}, "devices.0.serial_port: applies to transport rtu only"),
        ({"host": "10.0.0.5", "baudrate": 9600}, "devices.0.baudrate: applies to transport rtu only, not tcp"),
        (
            {"host": "10.0.0.5", "inter_request_delay_ms": 5},
            "devices.0.inter_request_delay_ms: applies to the shared lines of rtu and rtu_over_tcp",
        ),
        ({"transport": "rtu"}, "devices.0.serial_port: Field required (transport rtu)"),
        (
            {"transport": "rtu", "serial_port": "/dev/ttyUSB0", "host": "10.0.0.5"},
            "devices.0.host: not used by transport rtu (the line is serial_port)",
        ),
        (
            {"transport": "rtu", "serial_port": "/dev/ttyUSB0", "port": 502},
            "devices.0.port: not used by transport rtu",
        ),
        (
            {"transport": "rtu", "serial_port": "/dev/ttyUSB0", "baudrate": 12345},
            "devices.0.baudrate: 12345 is not a standard rate (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)",
        ),
        ({"transport": "rtu", "serial_port": "/dev/ttyUSB0", "parity": "X"}, "devices.0.parity: Input should be"),
        ({"transport": "rtu", "serial_port": "/dev/ttyUSB0", "stopbits": 3}, "devices.0.stopbits: Input should be"),
        ({"transport": "rtu", "serial_port": "/dev/ttyUSB0", "bytesize": 6}, "devices.0.bytesize: Input should be"),
        (
            {"transport": "rtu", "serial_port": "/dev/ttyUSB0", "inter_request_delay_ms": 1},
            "devices.0.inter_request_delay_ms: 1 is shorter than the 3.5-character gap of this line (4.01 ms)",
        ),
        (
            {"transport": "rtu", "serial_port": "/dev/ttyUSB0", "unit_id": 0},
            "devices.0.unit_id: 0 on a serial line; use 1..247 (0 is broadcast, never answered)",
        ),
        ({"transport": "rtu", "serial_port": "/dev/ttyUSB0", "unit_id": 248}, "devices.0.unit_id: 248 on a serial"),
        ({"transport": "rtu_over_tcp", "port": 4001}, "devices.0.host: Field required"),
        (
            {"transport": "rtu_over_tcp", "host": "10.0.0.9"},
            "devices.0.port: Field required (a serial device server has no standard port)",
        ),
        (
            {"transport": "rtu_over_tcp", "host": "10.0.0.9", "port": 4001, "parity": "N"},
            "devices.0.parity: applies to transport rtu only, not rtu_over_tcp",
        ),
        ({"transport": "modbus-ascii", "host": "10.0.0.9"}, "devices.0.transport: Input should be"),
    ],
)
def test_a_setting_that_does_not_apply_or_is_out_of_range_is_refused(fields: dict[str, Any], expected: str) -> None:
    assert f"gateway.yaml: {expected}" in refusal(modbus(**fields))


def test_the_devices_of_one_serial_line_must_agree_on_its_settings() -> None:
    message = refusal(
        modbus(machine="press-1", transport="rtu", serial_port="/dev/ttyUSB0", unit_id=1),
        modbus(machine="press-2", transport="rtu", serial_port="/dev/ttyUSB1", unit_id=1),
        modbus(machine="press-3", transport="rtu", serial_port="/dev/ttyUSB0", unit_id=2, baudrate=19200),
    )
    assert message == (
        "gateway.yaml: devices.2.baudrate: 'press-3' sets 19200 but 'press-1' sets 9600 on the same serial line "
        "/dev/ttyUSB0; a line has one setting"
    )


def test_two_devices_on_one_unit_id_of_a_line_are_refused() -> None:
    message = refusal(
        modbus(machine="press-1", transport="rtu_over_tcp", host="10.0.0.9", port=4001, unit_id=3),
        modbus(machine="press-2", transport="rtu_over_tcp", host="10.0.0.9", port=4001, unit_id=3),
    )
    assert message == "gateway.yaml: devices.1.unit_id: 'press-2' and 'press-1' both use unit 3 on 10.0.0.9:4001"


def test_one_host_port_speaks_one_framing() -> None:
    message = refusal(
        modbus(machine="press-1", host="10.0.0.9", port=4001),
        modbus(machine="press-2", transport="rtu_over_tcp", host="10.0.0.9", port=4001),
    )
    assert "devices.1.transport: 'press-2' (rtu_over_tcp) and 'press-1' (tcp) use the same 10.0.0.9:4001" in message


def test_units_of_one_line_and_tcp_devices_behind_one_gateway_are_accepted() -> None:
    parsed = config(
        modbus(machine="press-1", transport="rtu", serial_port="/dev/ttyUSB0", unit_id=1, timeout_s=0.5),
        modbus(machine="press-2", transport="rtu", serial_port="/dev/ttyUSB0", unit_id=2, inter_request_delay_ms=10),
        # several unit ids behind one Modbus TCP gateway stay tcp devices, each with its own connection, as before
        modbus(machine="press-3", host="10.0.0.5", unit_id=1),
        modbus(machine="press-4", host="10.0.0.5", unit_id=1),
    )
    assert [device.line for device in parsed.devices if isinstance(device, ModbusDevice)] == [
        "/dev/ttyUSB0",
        "/dev/ttyUSB0",
        "10.0.0.5:502",
        "10.0.0.5:502",
    ]


def test_an_rtu_config_survives_the_yaml_round_trip() -> None:
    parsed = config(
        modbus(machine="press-1", transport="rtu", serial_port="/dev/ttyUSB0", baudrate=19200, parity="N"),
        modbus(machine="press-2", transport="rtu_over_tcp", host="10.0.0.9", port=4001),
        modbus(machine="press-3", host="10.0.0.5"),
    )
    assert parse_config(parsed.to_yaml()) == parsed
