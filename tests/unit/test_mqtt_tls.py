"""MQTT TLS settings: every process builds its client in core.mqtt, and a combination that cannot work is refused.

`MQTT_*` (ingestor), the gateway YAML's `broker.tls` and the MQTT device's options are checked at start with one
line naming the setting (exit 2), never ignored. The certificates are made by our own mosquitto/make-certs.sh.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from cli.main import main as shopfloor
from cli.supervisor import HOST
from cli.up import Ports, gateway_config
from core.mqtt import MqttTls, MqttTlsError, mqtt_client
from core.settings import ConfigurationError, IngestorProcessSettings, MqttSettings
from gateway.config import BrokerTls, ConfigError, load_config, parse_config
from simulators import mqtt_device
from tests.support.mosquitto import make_certificates

GATEWAY = """
site: plant1
gateway_id: edge-01
broker: {broker}
devices:
  - protocol: modbus
    machine: assembly-1
    host: 10.0.0.21
    tags:
      - {{name: parts, address: 0, data_type: uint16}}
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a broker certificate and client certificates `gw` (CN plant1) and `ingestor-7` made by make-certs.sh."""
    folder = tmp_path_factory.mktemp("certs")
    make_certificates(folder, ["gw:plant1", "ingestor-7"])
    return folder


def refused(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """The ConfigurationError message the ingestor's settings give for these variables."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        IngestorProcessSettings.load()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- MQTT_* (the ingestor and anything built from MqttSettings) ---------------------------------------------------


async def test_tls_settings_build_a_client_that_checks_the_broker(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, certs: Path
) -> None:
    for name, value in {
        "MQTT_TLS": "true",
        "MQTT_PORT": "8884",
        "MQTT_CA_FILE": str(certs / "ca.crt"),
        "MQTT_CERT_FILE": str(certs / "ingestor-7.crt"),
        "MQTT_KEY_FILE": str(certs / "ingestor-7.key"),
        "INGEST_CLIENT_ID": "ingestor-7",
    }.items():
        monkeypatch.setenv(name, value)
    endpoint = IngestorProcessSettings.load().mqtt.endpoint()
    assert endpoint.tls == MqttTls(certs / "ca.crt", certs / "ingestor-7.crt", certs / "ingestor-7.key")
    context = endpoint.tls.context()
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    client = mqtt_client(endpoint, identifier="ingestor-1")
    assert client._client._ssl  # paho's own flag: the connection will be wrapped in TLS


async def test_plain_settings_build_a_plain_client(tmp_cwd: Path) -> None:
    endpoint = MqttSettings().endpoint()
    assert endpoint.tls is None
    assert not mqtt_client(endpoint, identifier="ingestor-1")._client._ssl


@pytest.mark.parametrize("variable", ["MQTT_CA_FILE", "MQTT_CERT_FILE", "MQTT_KEY_FILE"])
def test_a_tls_file_without_tls_is_refused(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, certs: Path, variable: str
) -> None:
    message = refused(monkeypatch, **{variable: str(certs / "ca.crt")})
    assert message.startswith(variable)
    assert "MQTT_TLS is false" in message


@pytest.mark.parametrize(("given", "named"), [("MQTT_CERT_FILE", "MQTT_KEY_FILE"), ("MQTT_KEY_FILE", "MQTT_CERT_FILE")])
def test_half_a_client_certificate_is_refused(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, certs: Path, given: str, named: str
) -> None:
    path = certs / ("gw.crt" if given == "MQTT_CERT_FILE" else "gw.key")
    message = refused(monkeypatch, MQTT_TLS="true", MQTT_PORT="8883", **{given: str(path)})
    assert message.startswith(named)


def test_a_missing_file_is_refused_by_name(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, MQTT_TLS="true", MQTT_PORT="8883", MQTT_CA_FILE="/nowhere/ca.crt")
    assert message == "MQTT_CA_FILE: /nowhere/ca.crt does not exist or is not a file"


def test_a_file_that_is_not_a_certificate_is_refused(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_cwd / "ca.crt").write_text("not a certificate\n")
    message = refused(monkeypatch, MQTT_TLS="true", MQTT_PORT="8883", MQTT_CA_FILE=str(tmp_cwd / "ca.crt"))
    assert message.startswith("MQTT_CA_FILE: ")
    assert "not a PEM CA certificate" in message


def test_a_key_of_another_certificate_is_refused(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, certs: Path) -> None:
    message = refused(
        monkeypatch,
        MQTT_TLS="true",
        MQTT_PORT="8884",
        MQTT_CERT_FILE=str(certs / "gw.crt"),
        MQTT_KEY_FILE=str(certs / "server.key"),
    )
    assert message.startswith("MQTT_CERT_FILE: ")
    assert "not a matching PEM certificate and key" in message


def test_an_ingestor_certificate_must_name_the_client_id(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, certs: Path
) -> None:
    """On the certificate listener the broker takes the certificate's name as the client id: another
    INGEST_CLIENT_ID would be ignored silently, and two ingestors sharing a certificate would throw each other off."""
    files = {"MQTT_TLS": "true", "MQTT_PORT": "8884", "MQTT_CERT_FILE": str(certs / "gw.crt")}
    files["MQTT_KEY_FILE"] = str(certs / "gw.key")
    message = refused(monkeypatch, **files, INGEST_CLIENT_ID="ingestor-2")
    assert "certificate of 'plant1'" in message
    assert "INGEST_CLIENT_ID=plant1" in message


@pytest.mark.parametrize("client_id", ["plant1", "gw-hall1", "my-ingestor"])
def test_an_ingestor_client_id_outside_the_reserved_prefix_is_refused(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, client_id: str
) -> None:
    # A gateway login is bound to a client id of its own name and cannot start with these prefixes.
    assert "INGEST_CLIENT_ID" in refused(monkeypatch, INGEST_CLIENT_ID=client_id).upper()


def test_tls_on_the_plain_port_is_refused(tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, MQTT_TLS="true")
    assert message.startswith("MQTT_PORT: TLS is on but the port is 1883")


def test_shopfloor_ingest_exits_2_with_one_line(
    tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MQTT_CA_FILE", "/etc/ssl/certs/ca-certificates.crt")
    assert shopfloor(["ingest"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("shopfloor: configuration error: MQTT_CA_FILE set but MQTT_TLS is false")


# --- the gateway's broker.tls ---------------------------------------------------------------------------------------


def test_gateway_tls_true_means_the_system_trust_store() -> None:
    config = parse_config(GATEWAY.format(broker="{host: broker.plant1.local, port: 8883, tls: true}"))
    assert config.broker.tls == BrokerTls()
    assert config.broker.endpoint().tls == MqttTls()
    assert parse_config(config.to_yaml()) == config
    plain = parse_config(GATEWAY.format(broker="{port: 1883, tls: false}"))
    assert plain.broker.tls is None
    assert plain.broker.endpoint().tls is None


def test_gateway_tls_files_are_relative_to_the_config_file(tmp_path: Path, certs: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    for name in ("ca.crt", "gw.crt", "gw.key"):
        (folder / name).write_bytes((certs / name).read_bytes())
    broker = "{port: 8884, tls: {ca_file: ca.crt, cert_file: gw.crt, key_file: gw.key}}"
    (folder / "gateway.yaml").write_text(GATEWAY.format(broker=broker))
    config = load_config(folder / "gateway.yaml")
    assert config.broker.endpoint().tls == MqttTls(folder / "ca.crt", folder / "gw.crt", folder / "gw.key")


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ("{port: 8883, tls: {cert_file: gw.crt}}", "broker.tls.cert_file: a client certificate needs both"),
        ("{port: 8883, tls: {key_file: gw.key}}", "broker.tls.cert_file: a client certificate needs both"),
        ("{port: 1883, tls: true}", "broker.port: TLS is on but the port is 1883"),
        ("{port: 8883, tls: {ca_file: ca.crt, verify: false}}", "broker.tls.verify: Extra inputs are not permitted"),
    ],
    ids=["cert-without-key", "key-without-cert", "tls-on-plain-port", "no-way-to-turn-checks-off"],
)
def test_gateway_tls_mistakes_name_the_field(broker: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(GATEWAY.format(broker=broker), source="gateway.yaml")
    assert str(caught.value).startswith(f"gateway.yaml: {message}")


def test_gateway_with_a_missing_ca_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gateway.yaml").write_text(GATEWAY.format(broker="{port: 8883, tls: {ca_file: missing.crt}}"))
    assert shopfloor(["gateway", "--config", str(tmp_path / "gateway.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"broker.tls.ca_file: {tmp_path / 'missing.crt'} does not exist" in err


def test_the_demo_gateway_stays_plaintext_on_loopback(tmp_path: Path) -> None:
    example = parse_config(GATEWAY.format(broker="{port: 8883, tls: true}"))
    config = gateway_config(example, ports=Ports.plan(), protocol="5", buffer_path=tmp_path / "buffer.db")
    assert (config.broker.host, config.broker.tls) == (HOST, None)


# --- the MQTT-native device simulator -------------------------------------------------------------------------------


def test_device_tls_options_go_through_the_same_checks(certs: Path) -> None:
    args = mqtt_device._parser().parse_args(["--tls", "--port", "8883", "--ca-file", str(certs / "ca.crt")])
    assert mqtt_device._tls(args) == MqttTls(ca_file=certs / "ca.crt")
    assert mqtt_device._tls(mqtt_device._parser().parse_args([])) is None


@pytest.mark.parametrize(
    "argv",
    [["--ca-file", "ca.crt"], ["--tls", "--port", "8883", "--cert-file", "gw.crt"], ["--tls"]],
    ids=["file-without-tls", "cert-without-key", "tls-on-plain-port"],
)
def test_device_refuses_tls_options_that_cannot_work(
    argv: list[str], certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(certs / arg) if arg.endswith((".crt", ".key")) else arg for arg in argv]
    with pytest.raises(SystemExit) as exited:
        mqtt_device._tls(mqtt_device._parser().parse_args(argv))
    assert exited.value.code == 2
    assert "error: --" in capsys.readouterr().err


def test_tls_errors_name_the_field() -> None:
    with pytest.raises(MqttTlsError) as caught:
        MqttTls(key_file=Path("/nowhere.key")).context()
    assert caught.value.field == "key_file"
