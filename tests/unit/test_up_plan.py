"""`shopfloor up`'s planning: ports and the generated broker and gateway configs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from cli.supervisor import HOST
from cli.up import (
    BASE_PORTS,
    Ports,
    StackError,
    amqtt_config,
    gateway_config,
    mosquitto_config,
    port_free,
    taken_ports,
)
from gateway.config import ModbusDevice, OpcUaDevice, load_config, parse_config

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
    example = load_config(EXAMPLE)
    made = gateway_config(example, ports=ports, protocol=protocol, buffer_path=tmp_path / "gateway-buffer.db")
    config = parse_config(made.to_yaml())  # the gateway's own validation accepts what `up` writes
    assert config == made
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
