"""OPC-UA security in the gateway config (policy, mode, identity, PKI folder), the certificate folder itself, and
what the OPC-UA source refuses before it opens a session (on crafted GetEndpoints answers, no server needed).

Every unsupported combination is one ConfigError line naming the field; none is ignored or guessed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen, security_policies
from cryptography.hazmat.primitives import serialization

from gateway.config import ConfigError, OpcUaDevice, SecurityMode, SecurityPolicy, load_config, parse_config
from gateway.pki import (
    FOLDERS,
    ClientApplication,
    Pki,
    PkiError,
    application_uris,
    load_certificate_bytes,
    thumbprint,
)
from gateway.sources.base import SourceError
from gateway.sources.opcua import OpcUaSource
from tests.support.certificates import CLIENT_AUTH, SERVER_AUTH, der, issue, make_ca
from tests.support.logs import logged_events

SECURED = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}


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
        ({"username": "u"} | SECURED, "devices.0.password: a username needs a password (password or password_file)"),
        (
            {"username": "u", "password": "x"},
            "devices.0.security_policy: with security policy None the password would travel in clear",
        ),
        (
            {"username": "u", "password_file": "pw.txt", "security_policy": "None"},
            "devices.0.security_policy: with security policy None the password would travel in clear",
        ),
        (
            {"endpoint": "opc.tcp://reader:s3cret@10.0.0.30:4840"},
            "devices.0.endpoint: a user name or password in the URL is not allowed",
        ),
        (
            {"endpoint": "opc.tcp://reader@10.0.0.30:4840", "username": "u", "password": "x"} | SECURED,
            "devices.0.endpoint: a user name or password in the URL is not allowed",
        ),
    ],
)
def test_unsupported_combinations_are_one_config_error_naming_the_field(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(**fields))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config: {expected}"), message
    assert "s3cret" not in message


def test_a_password_over_security_policy_none_needs_the_lab_opt_in() -> None:
    device = only_device(config_text(username="u", password="x", allow_insecure_password=True))
    assert device.allow_insecure_password
    assert not device.secured
    assert only_device(config_text(username="u", password="x", **SECURED)).allow_insecure_password is False


def test_the_application_uri_and_pki_folder_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    config = parse_config(config_text())
    # Made of gateway_id and site, not the host name: a re-created container keeps its certificate.
    assert config.opcua.application_uri is None
    assert config.application_uri == "urn:edge-01.plant1:shopfloor:gateway"
    assert config.client_application().application_uri == "urn:edge-01.plant1:shopfloor:gateway"
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
    text = config_text(username="reader", password_file="secrets/press-1.txt", **SECURED)
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


def test_the_key_is_owner_only_and_the_folders_are_tightened_even_when_they_existed(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    for folder in FOLDERS:
        (pki.root / folder).mkdir(parents=True, mode=0o755)
    pki.root.chmod(0o755)
    # A key left readable by a copy or an old version, then replaced: the new key must not inherit the mode.
    pki.own_key.write_bytes(b"old key")
    pki.own_key.chmod(0o644)
    pki.own_certificate.write_bytes(b"old certificate")
    _, reason = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    assert reason == "unreadable"
    assert stat.S_IMODE(pki.own_key.stat().st_mode) == 0o600
    for directory in (pki.root, *(pki.root / name for name in FOLDERS)):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    # A key that is fine but readable by others is tightened without a new certificate.
    pki.own_key.chmod(0o644)
    _, reason = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    assert reason is None
    assert stat.S_IMODE(pki.own_key.stat().st_mode) == 0o600
    # Written through temporary files renamed into place: none is left behind.
    assert {path.name for path in (pki.root / "own").iterdir()} == {"cert.der", "key.pem"}


def test_a_key_that_does_not_match_the_certificate_makes_a_new_pair(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    first, _ = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    pki.own_key.write_bytes(cert_gen.dump_private_key_as_pem(cert_gen.generate_private_key()))
    second, reason = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    assert reason == "key_mismatch"
    assert thumbprint(second) != thumbprint(first)
    key = serialization.load_pem_private_key(pki.own_key.read_bytes(), password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == second.public_key().public_bytes(*spki)
    assert pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")[1] is None


def test_a_failed_certificate_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = Pki(tmp_path / "pki")
    first, _ = pki.ensure_own_certificate("urn:edge-01:shopfloor:gateway")
    real_fsync = os.fsync
    calls = []

    def failing_fsync(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 2:  # the key went through, the certificate's write fails (disk full, power cut)
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        pki.ensure_own_certificate("urn:edge-02:shopfloor:gateway")
    monkeypatch.undo()
    assert load_certificate_bytes(pki.own_certificate.read_bytes()) == first
    assert {path.name for path in (pki.root / "own").iterdir()} == {"cert.der", "key.pem"}
    # The next start sees the pair does not fit together and makes a new one.
    renewed, reason = pki.ensure_own_certificate("urn:edge-02:shopfloor:gateway")
    assert reason == "application_uri_changed"
    assert application_uris(renewed) == ["urn:edge-02:shopfloor:gateway"]


def test_trusted_is_exactly_the_certificate_files_list_certs_reads(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    ca, ca_key = make_ca()
    kept, _ = issue(ca, ca_key, application_uri="urn:plc-1", usages=[SERVER_AUTH])
    disabled, _ = issue(ca, ca_key, application_uri="urn:plc-2", usages=[SERVER_AUTH])
    (pki.trusted / "plc-1.crt").write_bytes(kept.public_bytes(serialization.Encoding.PEM))
    (pki.trusted / "plc-2.der.disabled").write_bytes(der(disabled))
    (pki.trusted / "broken.der").write_bytes(b"\x30\x82\x01\x00 not a certificate")
    infos, skipped = pki.scan("trusted")
    assert [info.thumbprint for info in infos] == [thumbprint(kept)]
    assert [(item.path.name, item.reason) for item in skipped] == [("broken.der", "not a PEM or DER certificate")]


# -- what the source refuses before it opens a session (GetEndpoints answers crafted here) --------------------------

SERVER_URI = "urn:plant1:plc-1"
GATEWAY_URI = "urn:edge-01.plant1:shopfloor:gateway"


class Connected(Exception):
    """Raised instead of opening the session: every check before it passed."""


def crafted_endpoint(
    certificate: bytes,
    *,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
    token_policy: str = security_policies.SecurityPolicyNone.URI,
) -> ua.EndpointDescription:
    """One Basic256Sha256 endpoint as GetEndpoints would describe it, with a username token policy."""
    endpoint = ua.EndpointDescription()
    endpoint.EndpointUrl = "opc.tcp://10.0.0.30:4840"
    endpoint.SecurityPolicyUri = security_policies.SecurityPolicyBasic256Sha256.URI
    endpoint.SecurityMode = mode
    endpoint.ServerCertificate = certificate
    endpoint.Server = ua.ApplicationDescription(ApplicationUri=SERVER_URI, ApplicationType=ua.ApplicationType.Server)
    endpoint.UserIdentityTokens = [
        ua.UserTokenPolicy(PolicyId="username", TokenType=ua.UserTokenType.UserName, SecurityPolicyUri=token_policy)
    ]
    return endpoint


async def connect(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    endpoint: ua.EndpointDescription,
    session_endpoint: ua.EndpointDescription | None = None,
    **device: Any,
) -> None:
    """Run the source's connect against `endpoint` (GetEndpoints); Connected when it would open the session.

    `session_endpoint`: the endpoint the server describes in its CreateSession answer, when it differs.
    """

    async def offered(self: Client) -> list[ua.EndpointDescription]:
        return [endpoint]

    async def session(self: Client, **_: object) -> None:
        # What asyncua's create_session and activate_session do with the session's endpoint and a username.
        self._policy_ids = (session_endpoint or endpoint).UserIdentityTokens
        self.server_policy(ua.UserTokenType.UserName)
        raise Connected

    monkeypatch.setattr(Client, "connect_and_get_server_endpoints", offered)
    monkeypatch.setattr(Client, "connect", session)
    fields = {"username": "reader", "password": "s3cret"} | SECURED | device
    config = only_device(config_text(**fields))
    if config.security_mode is SecurityMode.SIGN:
        assert endpoint.SecurityMode == ua.MessageSecurityMode.Sign
    application = ClientApplication(GATEWAY_URI, Pki(tmp_path / "pki"))
    async with OpcUaSource(config, application=application):
        pass


def pinned_server(tmp_path: Path, *, usages: list[Any] | None = None, is_ca: bool = False) -> bytes:
    """A CA-issued server certificate, pinned in the gateway's trusted/; its DER."""
    ca, ca_key = make_ca()
    certificate, _ = issue(ca, ca_key, application_uri=SERVER_URI, usages=usages or [SERVER_AUTH], is_ca=is_ca)
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    (pki.trusted / "plc-1.der").write_bytes(der(certificate))
    return der(certificate)


async def test_a_pinned_server_certificate_passes_every_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Connected):
        await connect(monkeypatch, tmp_path, crafted_endpoint(pinned_server(tmp_path)))


async def test_a_ca_in_trusted_does_not_trust_what_it_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca, ca_key = make_ca()
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    (pki.trusted / "plant-ca.der").write_bytes(der(ca))
    # Anyone holding a certificate from the plant CA (here a client-only one, even one marked CA:TRUE) could
    # otherwise pose as the PLC.
    for usages, is_ca in (([SERVER_AUTH], False), ([CLIENT_AUTH], False), ([CLIENT_AUTH, SERVER_AUTH], True)):
        impostor, _ = issue(ca, ca_key, application_uri=SERVER_URI, usages=usages, is_ca=is_ca)
        with pytest.raises(SourceError, match=r"refused|not trusted") as caught:
            await connect(monkeypatch, tmp_path, crafted_endpoint(der(impostor)))
        assert thumbprint(impostor) in str(caught.value)


@pytest.mark.parametrize(
    ("usages", "is_ca", "problem"),
    [
        ([CLIENT_AUTH], False, "its extended key usage does not include serverAuth"),
        ([CLIENT_AUTH, SERVER_AUTH], True, r"it is a CA certificate \(CA:TRUE\)"),
    ],
)
async def test_a_pinned_certificate_that_is_no_server_certificate_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    usages: list[Any],
    is_ca: bool,
    problem: str,
) -> None:
    certificate = pinned_server(tmp_path, usages=usages, is_ca=is_ca)
    with pytest.raises(SourceError, match=f"server certificate [0-9a-f]{{40}} refused: {problem}"):
        await connect(monkeypatch, tmp_path, crafted_endpoint(certificate))
    [event] = logged_events(caplog, "opcua_server_certificate_not_usable")
    assert event["thumbprint"] == thumbprint(load_certificate_bytes(certificate))
    assert Pki(tmp_path / "pki").certificates("rejected") == []


async def test_a_disabled_file_is_not_trusted_and_a_broken_one_does_not_untrust_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    certificate = pinned_server(tmp_path)
    trusted = Pki(tmp_path / "pki").trusted
    (trusted / "plc-1.der").rename(trusted / "plc-1.der.disabled")
    with pytest.raises(SourceError, match="is not trusted"):
        await connect(monkeypatch, tmp_path, crafted_endpoint(certificate))
    (trusted / "plc-1.crt").write_bytes(load_certificate_bytes(certificate).public_bytes(serialization.Encoding.PEM))
    (trusted / "00-garbage.der").write_bytes(b"garbage")
    (trusted / "unreadable.pem").mkdir()  # not a file: left alone
    with pytest.raises(Connected):
        await connect(monkeypatch, tmp_path, crafted_endpoint(certificate))
    [skipped] = logged_events(caplog, "opcua_trusted_file_skipped")
    assert skipped["path"] == str(trusted / "00-garbage.der")


@pytest.mark.parametrize(
    "token_policy", [security_policies.SecurityPolicyNone.URI, ""], ids=["token-policy-none", "token-policy-empty"]
)
async def test_a_password_is_never_sent_readable_over_a_sign_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, token_policy: str
) -> None:
    certificate = pinned_server(tmp_path)
    sign = crafted_endpoint(certificate, mode=ua.MessageSecurityMode.Sign, token_policy=token_policy)
    if token_policy:
        with pytest.raises(SourceError, match=r"refused to send the password: .* would travel unencrypted"):
            await connect(monkeypatch, tmp_path, sign, security_mode="Sign")
        [event] = logged_events(caplog, "opcua_password_would_travel_in_clear")
        assert "s3cret" not in str(event)
        # The lab opt-in lets it through, with a warning.
        with pytest.raises(Connected):
            await connect(monkeypatch, tmp_path, sign, security_mode="Sign", allow_insecure_password=True)
        assert logged_events(caplog, "opcua_password_in_clear")
    else:
        # Empty means the endpoint's own policy: asyncua then encrypts the password with Basic256Sha256.
        with pytest.raises(Connected):
            await connect(monkeypatch, tmp_path, sign, security_mode="Sign")
    # Over SignAndEncrypt the channel encrypts it whatever the token policy says.
    with pytest.raises(Connected):
        await connect(monkeypatch, tmp_path, crafted_endpoint(certificate, token_policy=token_policy))


@pytest.mark.parametrize(
    "garbage",
    [b"\x30\x82\x00\x10" + b"\x00" * 16, b"\x30\x03\x02\x01\x01", b"not der at all"],
    ids=["short-sequence", "tiny-sequence", "text"],
)
async def test_a_malformed_server_certificate_is_a_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, garbage: bytes
) -> None:
    # A SourceError: this device reconnects with backoff; anything else would end the whole gateway.
    with pytest.raises(SourceError, match="not a valid DER certificate"):
        await connect(monkeypatch, tmp_path, crafted_endpoint(garbage))


async def test_the_password_check_is_made_again_on_the_endpoint_the_server_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GetEndpoints is unsigned: a man in the middle shows an encrypting token policy, the real server's session
    # endpoint (signed) says None. The password must still not go out.
    certificate = pinned_server(tmp_path)
    shown = crafted_endpoint(
        certificate,
        mode=ua.MessageSecurityMode.Sign,
        token_policy=security_policies.SecurityPolicyBasic256Sha256.URI,
    )
    real = crafted_endpoint(certificate, mode=ua.MessageSecurityMode.Sign)
    with pytest.raises(SourceError, match=r"cannot connect: refused to send the password: .*token policy None"):
        await connect(monkeypatch, tmp_path, shown, real, security_mode="Sign")
    with pytest.raises(Connected):
        await connect(monkeypatch, tmp_path, shown, shown, security_mode="Sign")
