"""OPC-UA security in the gateway config (policy, mode, identity, PKI folder) and the certificate folder itself.

Every unsupported combination is one ConfigError line naming the field; none is ignored or guessed.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from gateway.config import ConfigError, OpcUaDevice, SecurityMode, SecurityPolicy, load_config, parse_config
from gateway.pki import FOLDERS, Pki, PkiError, application_uris, load_certificate_bytes, thumbprint


def config_text(**device: Any) -> str:
    opcua = {
        "machine": "press-1",
        "protocol": "opcua",
        "endpoint": "opc.tcp://10.0.0.30:4840",
        "tags": [{"name": "barrel_temp_c", "node_id": "ns=2;s=Machine.BarrelTempC"}],
    }
    opcua.update(device)
    return yaml.safe_dump({"site": "plant1", "gateway_id": "edge-01", "devices": [opcua]})


def only_device(text: str) -> OpcUaDevice:
    device = parse_config(text).devices[0]
    assert isinstance(device, OpcUaDevice)
    return device


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "Sign"),
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes128_Sha256_RsaOaep", "Sign"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "Sign"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
    ],
)
def test_every_supported_policy_and_mode_parses(policy: str, mode: str) -> None:
    device = only_device(config_text(security_policy=policy, security_mode=mode))
    assert device.security_policy is SecurityPolicy(policy)
    assert device.security_mode is SecurityMode(mode)
    assert device.secured


def test_no_security_settings_mean_policy_none_as_before() -> None:
    device = only_device(config_text())
    assert device.security_policy is SecurityPolicy.NONE
    assert device.security_mode is None
    assert not device.secured
    assert only_device(config_text(security_policy="None", security_mode="None")).secured is False


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"security_policy": "Basic256Sha256"},
            "devices.0.security_mode: security_policy Basic256Sha256 needs security_mode Sign or SignAndEncrypt",
        ),
        (
            {"security_policy": "Basic256Sha256", "security_mode": "None"},
            "devices.0.security_mode: security_policy Basic256Sha256 needs security_mode Sign or SignAndEncrypt",
        ),
        ({"security_mode": "Sign"}, "devices.0.security_mode: Sign needs a security_policy other than None"),
        (
            {"security_policy": "None", "security_mode": "SignAndEncrypt"},
            "devices.0.security_mode: SignAndEncrypt needs a security_policy other than None",
        ),
        ({"security_policy": "Basic128Rsa15", "security_mode": "Sign"}, "devices.0.security_policy: Input should be"),
        ({"security_policy": "Basic256", "security_mode": "Sign"}, "devices.0.security_policy: Input should be"),
        ({"security_policy": "Basic256Sha256", "security_mode": "Encrypt"}, "devices.0.security_mode: Input should be"),
        ({"password": "x"}, "devices.0.username: a password is given without a username"),
        ({"password_file": "pw.txt"}, "devices.0.username: a password is given without a username"),
        (
            {"username": "u", "password": "x", "password_file": "pw.txt"},
            "devices.0.password_file: give password or password_file, not both",
        ),
        (
            {"user_certificate": "user.der"},
            "devices.0.user_certificate: a user certificate needs both user_certificate and user_key",
        ),
        (
            {"username": "u", "user_certificate": "user.der", "user_key": "user.pem"},
            "devices.0.user_certificate: one user identity per device, a username or a user certificate",
        ),
        ({"application_uri": "x"}, "devices.0.application_uri: Extra inputs are not permitted"),
    ],
)
def test_unsupported_combinations_are_one_config_error_naming_the_field(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(**fields))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config: {expected}"), message


def test_the_application_uri_and_pki_folder_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    config = parse_config(config_text())
    assert config.opcua.application_uri.startswith("urn:")
    assert config.opcua.application_uri.endswith(":shopfloor:gateway")
    assert config.pki_dir == Path("data/opcua-pki")
    raw = yaml.safe_load(config_text())
    raw["buffer"] = {"path": "state/buffer.db"}
    raw["opcua"] = {"application_uri": "urn:edge-01.plant1:shopfloor:gateway"}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    loaded = load_config(tmp_path / "gateway.yaml")
    assert loaded.pki_dir == tmp_path / "state" / "opcua-pki"  # beside the buffer
    assert loaded.client_application().application_uri == "urn:edge-01.plant1:shopfloor:gateway"
    raw["opcua"]["pki_dir"] = "certs"
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_config(tmp_path / "gateway.yaml").pki_dir == tmp_path / "certs"
    with pytest.raises(ConfigError, match=r"opcua\.application_uri: String should match pattern"):
        parse_config(yaml.safe_dump(raw | {"opcua": {"application_uri": "gateway one"}}))


def test_a_password_file_is_read_relative_to_the_config_and_checked_at_load(tmp_path: Path) -> None:
    text = config_text(username="reader", password_file="secrets/press-1.txt")
    (tmp_path / "gateway.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gateway.yaml")
    assert str(caught.value) == (
        f"{tmp_path / 'gateway.yaml'}: devices.0.password_file: cannot read "
        f"{tmp_path / 'secrets' / 'press-1.txt'}: No such file or directory"
    )
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "press-1.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"devices\.0\.password_file: .* is empty"):
        load_config(tmp_path / "gateway.yaml")
    (tmp_path / "secrets" / "press-1.txt").write_text("s3cret with spaces \n", encoding="utf-8")
    device = load_config(tmp_path / "gateway.yaml").devices[0]
    assert isinstance(device, OpcUaDevice)
    assert device.password_value() == "s3cret with spaces "
    # The secret stays out of the config's repr and YAML dump.
    assert "s3cret" not in repr(device)


def test_a_user_certificate_that_is_not_a_certificate_is_refused_at_load(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure_own_certificate("urn:user")
    text = config_text(user_certificate=str(pki.own_key), user_key=str(pki.own_key))
    (tmp_path / "gateway.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"devices\.0\.user_certificate: .*key\.pem is not a PEM or DER certificate"):
        load_config(tmp_path / "gateway.yaml")
    text = config_text(user_certificate=str(pki.own_certificate), user_key=str(pki.own_key))
    (tmp_path / "gateway.yaml").write_text(text, encoding="utf-8")
    device = load_config(tmp_path / "gateway.yaml").devices[0]
    assert isinstance(device, OpcUaDevice)
    assert device.user_certificate == pki.own_certificate


def test_the_own_certificate_is_made_once_names_the_application_uri_and_keeps_its_key_private(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    certificate, created = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    assert created
    assert {path.name for path in pki.root.iterdir()} == set(FOLDERS)
    assert application_uris(certificate) == ["urn:edge-01:shopfloor:gateway"]
    assert stat.S_IMODE(pki.own_key.stat().st_mode) == 0o600
    again, created_again = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    assert not created_again
    assert thumbprint(again) == thumbprint(certificate)
    # Another ApplicationURI: servers would refuse the old certificate, so a new one is made.
    renamed, created = pki.ensure_own_certificate("urn:edge-02:shopfloor:gateway")
    assert created
    assert application_uris(renamed) == ["urn:edge-02:shopfloor:gateway"]


def test_reject_then_trust_by_thumbprint_moves_the_certificate(tmp_path: Path) -> None:
    server = Pki(tmp_path / "server")
    certificate, _ = server.ensure_own_certificate("urn:plc")
    pki = Pki(tmp_path / "pki")
    rejected = pki.reject(certificate)
    assert rejected.parent == pki.rejected
    assert thumbprint(certificate) in rejected.name
    assert pki.reject(certificate) == rejected  # once per thumbprint
    [info] = pki.certificates("rejected")
    assert info.subject.endswith(f"CN=Shopfloor gateway@{info.subject.split('@')[1]}")
    assert not info.expired
    with pytest.raises(PkiError, match="no certificate with this thumbprint"):
        pki.trust("00" * 20)
    with pytest.raises(PkiError, match="neither a certificate file nor a 40-digit thumbprint"):
        pki.trust("abc")
    colons = ":".join(info.thumbprint[i : i + 2] for i in range(0, 40, 2)).upper()
    target, trusted = pki.trust(colons)
    assert thumbprint(trusted) == info.thumbprint
    assert target.parent == pki.trusted
    assert pki.certificates("rejected") == []


def test_trust_takes_a_pem_file_and_refuses_what_is_not_a_certificate(tmp_path: Path) -> None:
    server = Pki(tmp_path / "server")
    certificate, _ = server.ensure_own_certificate("urn:plc")
    pem = tmp_path / "plc.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pki = Pki(tmp_path / "pki")
    target, _ = pki.trust(str(pem))
    assert load_certificate_bytes(target.read_bytes()) == certificate
    with pytest.raises(PkiError, match="not a PEM or DER certificate"):
        pki.trust(str(server.own_key))
