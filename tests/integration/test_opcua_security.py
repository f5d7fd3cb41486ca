"""OPC-UA security: the gateway against the secured simulator, certificate trust, and node-opcua interop both ways.

Real servers and processes throughout: the simulator (asyncua) with its own certificate and logins, a node-opcua
server (`tests/support/nodeopcua`) with Basic256Sha256 SignAndEncrypt, node-opcua's and asyncua's clients, the
`shopfloor gateway trust` / `list-certs` commands, Mosquitto, the ingestor and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.uaprotocol_auto import MessageSecurityMode
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import GatewayConfig, OpcUaDevice, load_config
from gateway.pki import ClientApplication, Pki, application_uris, load_certificate_bytes, thumbprint
from gateway.sources.base import SourceError
from gateway.sources.opcua import OpcUaSource
from simulators.opcua import (
    APPLICATION_URI,
    STATE_CODES,
    InjectionMachineServer,
    ensure_server_certificate,
    machine_tags,
    node_id,
)
from tests.integration.test_gateway import Observed, gateway_settings, running_gateway, wait_until_stored
from tests.support.certificates import CLIENT_AUTH, SERVER_AUTH, der, issue, make_ca, write_server_identity
from tests.support.logs import logged_events
from tests.support.mosquitto import MosquittoBroker
from tests.support.nodeopcua import (
    SERVER_STATES,
    SERVER_TAGS,
    NodeOpcUaServer,
    nodeopcua_read,
    running_nodeopcua_server,
)
from tests.support.pipeline import running_ingestor, unique
from tests.support.postgres import free_port

pytestmark = [pytest.mark.opcua]

SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")
USERS = {"gateway": "opcua-secured-secret"}
SECURED = [("Basic256Sha256", "SignAndEncrypt")]
ALL_POLICIES = [
    ("Basic256Sha256", "SignAndEncrypt"),
    ("Basic256Sha256", "Sign"),
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
    ("Aes256_Sha256_RsaPss", "Sign"),
]
SERVER_NODE_TAGS = [{"name": tag, "node_id": node} for tag, node in SERVER_TAGS.items()]
# The gateway as the node-opcua server knows it: its certificate is trusted there before the server starts.
NODE_GATEWAY_URI = "urn:edge-node.plant1:shopfloor:gateway"


@pytest.fixture(scope="module")
def user_identity(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An X.509 user identity (certificate and key in `own/`) that the secured simulator accepts."""
    pki = Pki(tmp_path_factory.mktemp("user-identity"))
    pki.ensure_own_certificate("urn:test:operator-identity")
    return pki


@pytest.fixture(scope="module")
async def secured(
    tmp_path_factory: pytest.TempPathFactory, user_identity: Pki
) -> AsyncIterator[InjectionMachineServer]:
    """The simulator with every supported secured endpoint, its own certificate, one login and one user
    certificate, no anonymous access."""
    identity = load_certificate_bytes(user_identity.own_certificate.read_bytes())
    async with InjectionMachineServer(
        port=0,
        seed=11,
        speed=20.0,
        update_interval_s=0.05,
        users=USERS,
        allow_anonymous=False,
        security=ALL_POLICIES,
        certificate_dir=tmp_path_factory.mktemp("simulator-pki"),
        user_certificates=[identity],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def node_gateway_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The PKI folder of the gateway that reads the node-opcua server, its certificate made in advance."""
    pki = Pki(tmp_path_factory.mktemp("node-gateway-pki"))
    pki.ensure_own_certificate(NODE_GATEWAY_URI)
    return pki


@pytest.fixture(scope="module")
def nodeopcua_server(tmp_path_factory: pytest.TempPathFactory, node_gateway_pki: Pki) -> Iterator[NodeOpcUaServer]:
    """The node-opcua server for this module, trusting only `node_gateway_pki`'s certificate (an operator's copy
    of `own/cert.der` into the server's trusted folder); if it cannot start, the tests that need it fail."""
    with running_nodeopcua_server(
        tmp_path_factory.mktemp("nodeopcua"),
        user="gateway",
        password="node-secret",
        trusted_clients=[node_gateway_pki.own_certificate],
    ) as server:
        yield server


def server_certificate(server: InjectionMachineServer) -> Path:
    assert server.certificate_dir is not None
    return ensure_server_certificate(server.certificate_dir)[0]


def write_config(folder: Path, devices: list[dict[str, Any]], **extra: Any) -> Path:
    """A gateway YAML file in `folder` (its buffer and PKI beside it); its path."""
    config = {
        "site": "plant1",
        "gateway_id": "edge-sec",
        "buffer": {"path": "buffer.db"},
        "metrics_port": None,
        "opcua": {"application_uri": "urn:test-host:shopfloor:gateway", "pki_dir": "pki"},
        "devices": devices,
        **extra,
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def secured_device(
    endpoint: str, policy: str = "Basic256Sha256", mode: str = "SignAndEncrypt", **extra: Any
) -> dict[str, Any]:
    return {
        "machine": "press-sec",
        "protocol": "opcua",
        "endpoint": endpoint,
        "mode": "poll",
        "poll_interval_s": 0.1,
        "publishing_interval_ms": 100,
        "timeout_s": 5.0,
        "security_policy": policy,
        "security_mode": mode,
        "username": "gateway",
        "password": USERS["gateway"],
        "state_tag": "state",
        "state_map": STATE_CODES,
        "tags": machine_tags(),
        **extra,
    }


def shopfloor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own command, fixed arguments
        [SHOPFLOOR, *args], capture_output=True, text=True, check=False, timeout=60
    )


async def test_an_untrusted_server_is_refused_kept_in_rejected_and_connects_once_trusted(
    secured: InjectionMachineServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = write_config(tmp_path, [secured_device(secured.endpoint)])
    config = load_config(config_file)
    application = config.client_application(config_file)
    device = config.devices[0]
    assert isinstance(device, OpcUaDevice)
    expected = thumbprint(load_certificate_bytes(server_certificate(secured).read_bytes()))

    with pytest.raises(SourceError, match=f"server certificate {expected} is not trusted"):
        async with OpcUaSource(device, application=application):
            pass
    pki = Pki(tmp_path / "pki")
    assert {folder.name for folder in pki.root.iterdir()} == {"own", "trusted", "rejected", "issuers"}
    [rejected] = pki.certificates("rejected")
    assert rejected.thumbprint == expected
    assert expected in rejected.path.name
    assert pki.certificates("trusted") == []
    # The gateway made its own certificate, naming the ApplicationURI it announces.
    [own] = pki.certificates("own")
    own_certificate = load_certificate_bytes(pki.own_certificate.read_bytes())
    assert application_uris(own_certificate) == ["urn:test-host:shopfloor:gateway"]

    # One log line says exactly what to run; running it trusts the server.
    [event] = logged_events(caplog, "opcua_server_certificate_untrusted")
    command = str(event["fix"])
    assert command == f"shopfloor gateway trust --config {config_file} {rejected.path}"
    trusted = await asyncio.to_thread(shopfloor, *command.split()[1:])
    assert trusted.returncode == 0, trusted.stderr
    assert expected in trusted.stdout
    listed = await asyncio.to_thread(shopfloor, "gateway", "list-certs", "--config", str(config_file))
    assert listed.returncode == 0, listed.stderr
    trusted_part = listed.stdout.split("trusted:")[1].split("rejected:")[0]
    assert expected in trusted_part
    assert own.thumbprint in listed.stdout.split("trusted:")[0]
    assert "rejected: (none)" in listed.stdout

    source = OpcUaSource(device, application=application)
    async with source, aclosing(source.values()) as stream:
        batch = await anext(stream)
    assert {value.tag for value in batch} == {tag["name"] for tag in machine_tags()}


async def test_trust_takes_a_thumbprint_and_bad_input_is_one_line_exit_2(
    secured: InjectionMachineServer, tmp_path: Path
) -> None:
    config_file = write_config(tmp_path, [secured_device(secured.endpoint)])
    config = load_config(config_file)
    device = config.devices[0]
    assert isinstance(device, OpcUaDevice)
    with pytest.raises(SourceError, match="not trusted"):
        async with OpcUaSource(device, application=config.client_application(config_file)):
            pass
    [rejected] = Pki(tmp_path / "pki").certificates("rejected")

    for bad in ("not-a-thumbprint", "ab" * 20, str(config_file)):
        result = await asyncio.to_thread(shopfloor, "gateway", "trust", "--config", str(config_file), bad)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert bad in result.stderr
    missing = await asyncio.to_thread(shopfloor, "gateway", "trust", "--config", str(tmp_path / "nope.yaml"), "x")
    assert missing.returncode == 2
    assert "nope.yaml" in missing.stderr
    for without_config in (["gateway"], ["gateway", "list-certs"], ["gateway", "trust", rejected.thumbprint]):
        result = await asyncio.to_thread(shopfloor, *without_config)
        assert result.returncode == 2, without_config
        assert "the following arguments are required: --config" in result.stderr
    upper = rejected.thumbprint.upper()
    result = await asyncio.to_thread(shopfloor, "gateway", "--config", str(config_file), "trust", upper)
    assert result.returncode == 0, result.stderr
    assert [info.thumbprint for info in Pki(tmp_path / "pki").certificates("trusted")] == [rejected.thumbprint]
    assert Pki(tmp_path / "pki").certificates("rejected") == []


@pytest.mark.parametrize(("policy", "mode"), ALL_POLICIES)
async def test_every_supported_policy_and_mode_connects_and_a_wrong_password_is_refused(
    secured: InjectionMachineServer, tmp_path: Path, policy: str, mode: str
) -> None:
    config_file = write_config(tmp_path, [secured_device(secured.endpoint, policy, mode)])
    Pki(tmp_path / "pki").trust(str(server_certificate(secured)))
    config = load_config(config_file)
    device = config.devices[0]
    assert isinstance(device, OpcUaDevice)
    application = config.client_application(config_file)
    source = OpcUaSource(device, application=application)
    async with source, aclosing(source.values()) as stream:
        batch = await anext(stream)
    current = secured.current()
    assert {value.tag for value in batch} == set(current)

    wrong = device.model_copy(update={"password": None, "password_file": tmp_path / "wrong.txt"})
    (tmp_path / "wrong.txt").write_text("not-the-password\n", encoding="utf-8")
    with pytest.raises(
        SourceError, match=r"the server refused user 'gateway': .*BadUserAccessDenied.*check the username"
    ):
        async with OpcUaSource(wrong, application=application):
            pass


async def test_a_user_certificate_is_an_identity_and_an_unknown_one_is_refused(
    secured: InjectionMachineServer, user_identity: Pki, tmp_path: Path
) -> None:
    # A PEM key named `.key`, as PKI tools write them: the format is read from the content, not the suffix.
    key = tmp_path / "operator.key"
    key.write_bytes(user_identity.own_key.read_bytes())
    identity = {"user_certificate": str(user_identity.own_certificate), "user_key": str(key)}
    device = secured_device(secured.endpoint) | identity
    del device["username"], device["password"]
    config_file = write_config(tmp_path, [device])
    Pki(tmp_path / "pki").trust(str(server_certificate(secured)))
    config = load_config(config_file)
    opcua = config.devices[0]
    assert isinstance(opcua, OpcUaDevice)
    application = config.client_application(config_file)
    source = OpcUaSource(opcua, application=application)
    async with source, aclosing(source.values()) as stream:
        assert {value.tag for value in await anext(stream)} == set(secured.current())
    # The gateway's own application certificate is a valid certificate, but not an identity the server knows.
    stranger = opcua.model_copy(
        update={"user_certificate": application.pki.own_certificate, "user_key": application.pki.own_key}
    )
    with pytest.raises(SourceError, match=r"the server refused the user identity: .*BadUserAccessDenied"):
        async with OpcUaSource(stranger, application=application):
            pass


async def test_a_secured_device_against_a_server_without_that_endpoint_names_what_it_offers(tmp_path: Path) -> None:
    async with InjectionMachineServer(port=0, update_interval_s=0.5) as plain:
        config_file = write_config(tmp_path, [secured_device(plain.endpoint)])
        config = load_config(config_file)
        device = config.devices[0]
        assert isinstance(device, OpcUaDevice)
        with pytest.raises(
            SourceError, match=r"offers no Basic256Sha256/SignAndEncrypt endpoint \(it offers None/None_\)"
        ):
            async with OpcUaSource(device, application=config.client_application(config_file)):
                pass


@pytest.mark.mosquitto
@pytest.mark.postgres
async def test_the_chain_from_a_secured_simulator_stores_what_it_exposed(
    secured: InjectionMachineServer,
    broker: MosquittoBroker,
    ingest_database: str,
    pipeline_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    machine, observed = unique("secpress"), Observed()
    device = secured_device(secured.endpoint) | {"machine": machine, "mode": "subscribe"}
    settings = gateway_settings(broker, tmp_path / "buffer.db", [device])
    settings["opcua"] = {"pki_dir": str(tmp_path / "pki")}
    Pki(tmp_path / "pki").trust(str(server_certificate(secured)))
    async with (
        running_ingestor(broker, ingest_database, pipeline_engine),
        running_gateway(settings, observed) as gateway,
    ):
        await asyncio.wait_for(gateway.connected.wait(), timeout=15)
        await wait_for_readings(observed, machine, more_than=20, within_s=30)
    expected = observed.readings(machine)
    rows = await wait_until_stored(pipeline_engine, machine, expected)
    assert len(expected) > 20
    assert rows == expected
    exposed: dict[str, list[float]] = defaultdict(list)
    for _, tag, value in secured.record:
        exposed[tag].append(float(value))
    for tag, _, value in rows:
        assert any(math.isclose(value, seen, rel_tol=1e-9) for seen in exposed[tag]), tag


@pytest.mark.nodeopcua
async def test_asyncua_and_nodeopcua_clients_read_the_secured_simulator(
    secured: InjectionMachineServer, tmp_path: Path
) -> None:
    tags = ["barrel_temp_c", "cycle_count", "state"]
    nodes = [node_id(tag) for tag in tags]
    secured.pause()
    try:
        current = secured.current()
        # asyncua's own client, outside the gateway's code.
        client = Client(secured.endpoint, timeout=5)
        client.application_uri = "urn:test:asyncua-client"
        await client.setup_self_signed_certificate(tmp_path / "asyncua" / "key.pem", tmp_path / "asyncua" / "cert.der")
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            certificate=str(tmp_path / "asyncua" / "cert.der"),
            private_key=str(tmp_path / "asyncua" / "key.pem"),
            server_certificate=str(server_certificate(secured)),
            mode=MessageSecurityMode.SignAndEncrypt,
        )
        client.set_user("gateway")
        client.set_password(USERS["gateway"])
        async with client:
            values = await client.read_values([client.get_node(node) for node in nodes])
        assert dict(zip(tags, values, strict=True)) == {tag: current[tag] for tag in tags}
        for policy, mode in (("Basic256Sha256", "SignAndEncrypt"), ("Aes256_Sha256_RsaPss", "Sign")):
            read = await asyncio.to_thread(
                nodeopcua_read,
                secured.endpoint,
                nodes,
                policy=policy,
                mode=mode,
                pki=tmp_path / "nodeopcua-client",
                user="gateway",
                password=USERS["gateway"],
            )
            assert {tag: read[node]["value"] for tag, node in zip(tags, nodes, strict=True)} == {
                tag: current[tag] for tag in tags
            }
            assert {read[node]["status"] for node in nodes} == {"Good"}
        with pytest.raises(AssertionError, match="BadUserAccessDenied"):
            await asyncio.to_thread(
                nodeopcua_read,
                secured.endpoint,
                nodes,
                policy="Basic256Sha256",
                mode="SignAndEncrypt",
                pki=tmp_path / "nodeopcua-client",
                user="gateway",
                password="wrong",
            )
    finally:
        secured.resume()


@pytest.mark.nodeopcua
@pytest.mark.mosquitto
@pytest.mark.postgres
async def test_the_gateway_polls_and_subscribes_to_a_nodeopcua_server_into_the_database(
    nodeopcua_server: NodeOpcUaServer,
    node_gateway_pki: Pki,
    broker: MosquittoBroker,
    ingest_database: str,
    pipeline_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    polled, subscribed, observed = unique("nodepoll"), unique("nodesub"), Observed()
    common = {
        "protocol": "opcua",
        "endpoint": nodeopcua_server.endpoint,
        "poll_interval_s": 0.2,
        "publishing_interval_ms": 100,
        "timeout_s": 5.0,
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "username": nodeopcua_server.user,
        "password_file": str(tmp_path / "password"),
        "state_tag": "state",
        "state_map": SERVER_STATES,
        "tags": SERVER_NODE_TAGS,
    }
    (tmp_path / "password").write_text(nodeopcua_server.password + "\n", encoding="utf-8")
    devices = [common | {"machine": polled, "mode": "poll"}, common | {"machine": subscribed, "mode": "subscribe"}]
    settings = gateway_settings(broker, tmp_path / "buffer.db", devices)
    # The gateway whose certificate the node-opcua server trusts (it refuses any other, see the next test).
    settings["opcua"] = {"pki_dir": str(node_gateway_pki.root), "application_uri": NODE_GATEWAY_URI}
    # The server's own certificate file, as an operator would copy it from the server.
    node_gateway_pki.trust(str(nodeopcua_server.certificate))
    GatewayConfig.model_validate(settings)
    async with (
        running_ingestor(broker, ingest_database, pipeline_engine),
        running_gateway(settings, observed) as gateway,
    ):
        await asyncio.wait_for(gateway.connected.wait(), timeout=15)
        # Both devices read for a while: at least 15 counter values each (about 3 s of polling at 0.2 s).
        for machine in (polled, subscribed):
            await wait_for_readings(observed, machine, more_than=29, within_s=30)
    written = {(ts, tag, value) for ts, tag, value in nodeopcua_server.written()}
    for machine in (polled, subscribed):
        assert {value.tag for value in observed.values[machine]} == set(SERVER_TAGS), machine
        expected = observed.readings(machine)
        rows = await wait_until_stored(pipeline_engine, machine, expected)
        assert len(expected) >= 30, machine
        assert rows == expected, machine
        # Every stored value is one the node-opcua server wrote, at the source time it wrote it.
        assert {(ts, tag, value) for tag, ts, value in rows} <= written, machine
        # The counter moved while it was read: the gateway saw the server change, not one value repeated.
        assert len({value for tag, _, value in rows if tag == "counter"}) >= 10, machine


@pytest.mark.nodeopcua
async def test_the_secured_simulator_process_serves_nodeopcua_and_refuses_unsecured_clients(tmp_path: Path) -> None:
    certificates, log = tmp_path / "simulator", (tmp_path / "simulator.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        SHOPFLOOR,
        *("simulate", "opcua", "--port", "0", "--update-interval", "0.1"),
        *("--security", "Basic256Sha256:SignAndEncrypt", "--security", "Aes128_Sha256_RsaOaep:Sign"),
        *("--certificate-dir", str(certificates), "--user", "operator:process-secret", "--no-anonymous"),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        assert ready.startswith(b"READY opcua opc.tcp://127.0.0.1:"), ready
        endpoint = ready.split()[2].decode()
        # Its certificate names the ApplicationURI the server announces, so clients that check it accept it.
        assert application_uris(load_certificate_bytes((certificates / "cert.der").read_bytes())) == [APPLICATION_URI]
        for policy, mode in (("Basic256Sha256", "SignAndEncrypt"), ("Aes128_Sha256_RsaOaep", "Sign")):
            read = await asyncio.to_thread(
                nodeopcua_read,
                endpoint,
                [node_id("barrel_temp_c"), node_id("state")],
                policy=policy,
                mode=mode,
                pki=tmp_path / "nodeopcua-client",
                user="operator",
                password="process-secret",
            )
            barrel = read[node_id("barrel_temp_c")]["value"]
            # JSON from JavaScript: a Double with an integral value (25.0) arrives as 25.
            assert isinstance(barrel, int | float)
            assert not isinstance(barrel, bool)
            assert 15.0 <= barrel <= 250.0
            assert read[node_id("state")]["value"] in STATE_CODES
        # No unsecured endpoint is offered: asyncua's uaread (security None) cannot read.
        uaread = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("uaread")),
            *("-u", endpoint, "-n", node_id("state")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(uaread.communicate(), 30)
        assert uaread.returncode != 0
        # Refused for the reason under test (no None endpoint), not for a crash or a wrong node id.
        output = (out + err).decode(errors="replace")
        # asyncua names the mode by its number: 1 is None.
        assert "No matching endpoints: 1, http://opcfoundation.org/UA/SecurityPolicy#None" in output, output
    finally:
        process.terminate()
        returncode = await asyncio.wait_for(process.wait(), 10)
        log.close()
    assert returncode == 0
    assert "Traceback" not in (tmp_path / "simulator.log").read_text()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--security", "Basic128Rsa15:Sign", "--certificate-dir", "x"], "security policy 'Basic128Rsa15' is not one"),
        (["--security", "Basic256Sha256:Encrypt", "--certificate-dir", "x"], "security mode 'Encrypt' is not one"),
        (["--security", "Basic256Sha256:Sign"], "--security needs --certificate-dir"),
        (["--user", "nopassword"], "expected NAME:PASSWORD"),
        (["--no-anonymous"], "--no-anonymous needs at least one --user"),
    ],
)
def test_bad_simulator_security_options_exit_2_naming_the_problem(arguments: list[str], expected: str) -> None:
    result = shopfloor("simulate", "opcua", "--port", "0", *arguments)
    assert result.returncode == 2
    assert expected in result.stderr


async def test_the_gateway_process_logs_the_trust_command_and_connects_after_it_without_a_restart(
    secured: InjectionMachineServer, tmp_path: Path
) -> None:
    # No broker listens: the gateway still connects to its devices and buffers what it reads.
    broker = {"host": "127.0.0.1", "port": free_port(), "username": "plant1", "password": "unused-here"}
    config_file = write_config(tmp_path, [secured_device(secured.endpoint)], broker=broker)
    log_path = tmp_path / "gateway.log"
    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    with log_path.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            SHOPFLOOR, "gateway", "--config", str(config_file), stdout=output, stderr=asyncio.subprocess.STDOUT, env=env
        )
    try:
        untrusted = await wait_for_event(log_path, "opcua_server_certificate_untrusted")
        command = str(untrusted["fix"])
        assert command.startswith(f"shopfloor gateway trust --config {config_file} ")
        result = await asyncio.to_thread(shopfloor, *command.split()[1:])
        assert result.returncode == 0, result.stderr
        connected = await wait_for_event(log_path, "opcua_connected", within_s=45)
        assert connected["machine"] == "press-sec"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    events = [event["event"] for event in json_lines(log_path)]
    assert events.count("opcua_certificate_created") == 1
    assert "Traceback" not in log_path.read_text()


async def wait_for_readings(observed: Observed, machine: str, *, more_than: int, within_s: float) -> None:
    """Until the gateway reported more than `more_than` readings of `machine`; AssertionError after `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while len(observed.readings(machine)) <= more_than:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{machine}: {len(observed.readings(machine))} readings within {within_s} s")
        await asyncio.sleep(0.1)


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


async def wait_for_event(path: Path, event: str, within_s: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        for line in json_lines(path):
            if line.get("event") == event:
                return line
        await asyncio.sleep(0.2)
    text = await asyncio.to_thread(path.read_text, errors="replace")
    raise AssertionError(f"no {event} within {within_s} s:\n{text[-3000:]}")


async def test_a_server_that_does_not_trust_the_gateway_says_so_until_it_does(tmp_path: Path) -> None:
    clients = tmp_path / "server-trusted-clients"
    clients.mkdir()
    async with InjectionMachineServer(
        port=0,
        update_interval_s=0.2,
        users=USERS,
        allow_anonymous=False,
        security=SECURED,
        certificate_dir=tmp_path / "server",
        trusted_clients=clients,
    ) as strict:
        config_file = write_config(tmp_path, [secured_device(strict.endpoint)])
        Pki(tmp_path / "pki").trust(str(server_certificate(strict)))
        config = load_config(config_file)
        device = config.devices[0]
        assert isinstance(device, OpcUaDevice)
        application = config.client_application(config_file)
        with pytest.raises(SourceError, match=r"the server refused the gateway's certificate \(.*own/cert\.der\)"):
            async with OpcUaSource(device, application=application):
                pass
        # What an operator does on the server: accept the gateway's certificate.
        (clients / "gateway.der").write_bytes(application.pki.own_certificate.read_bytes())
        source = OpcUaSource(device, application=application)
        async with source, aclosing(source.values()) as stream:
            assert {value.tag for value in await anext(stream)} == set(strict.current())


@pytest.mark.nodeopcua
async def test_the_nodeopcua_server_refuses_a_gateway_whose_certificate_it_does_not_trust(
    nodeopcua_server: NodeOpcUaServer, node_gateway_pki: Pki, tmp_path: Path
) -> None:
    # Another gateway (its own new certificate), trusting the server: node-opcua, not the gateway, says no.
    device = OpcUaDevice.model_validate(
        {
            "machine": "press-node",
            "protocol": "opcua",
            "endpoint": nodeopcua_server.endpoint,
            "mode": "poll",
            "timeout_s": 5.0,
            "security_policy": "Basic256Sha256",
            "security_mode": "SignAndEncrypt",
            "username": nodeopcua_server.user,
            "password": nodeopcua_server.password,
            "state_tag": "state",
            "state_map": SERVER_STATES,
            "tags": SERVER_NODE_TAGS,
        }
    )
    stranger = ClientApplication(NODE_GATEWAY_URI.replace("edge-node", "edge-stranger"), Pki(tmp_path / "pki"))
    stranger.pki.trust(str(nodeopcua_server.certificate))
    # node-opcua answers OpenSecureChannel with a fault asyncua cannot read: still this device's SourceError.
    with pytest.raises(SourceError, match=r"cannot connect: the server refused to open the secure channel; .*"):
        async with OpcUaSource(device, application=stranger):
            pass
    # The server saw that very certificate and put it in its rejected folder.
    refused = {
        thumbprint(load_certificate_bytes(path.read_bytes()))
        for path in nodeopcua_server.rejected.iterdir()
        if path.is_file()
    }
    assert thumbprint(load_certificate_bytes(stranger.pki.own_certificate.read_bytes())) in refused
    assert thumbprint(load_certificate_bytes(node_gateway_pki.own_certificate.read_bytes())) not in refused
    # The trusted gateway, same server, same login: connects.
    trusted = ClientApplication(NODE_GATEWAY_URI, node_gateway_pki)
    node_gateway_pki.trust(str(nodeopcua_server.certificate))
    source = OpcUaSource(device, application=trusted)
    async with source, aclosing(source.values()) as stream:
        assert {value.tag for value in await anext(stream)} == set(SERVER_TAGS)


async def test_a_ca_in_trusted_does_not_let_a_server_with_a_certificate_it_signed_in(tmp_path: Path) -> None:
    """The attack: the plant CA is in trusted/; a machine with any certificate from that CA poses as the server."""
    ca, ca_key = make_ca()
    certificate, key = issue(ca, ca_key, application_uri=APPLICATION_URI, usages=[SERVER_AUTH, CLIENT_AUTH])
    write_server_identity(tmp_path / "server", certificate, key)
    async with InjectionMachineServer(
        port=0,
        update_interval_s=0.2,
        users=USERS,
        allow_anonymous=False,
        security=SECURED,
        certificate_dir=tmp_path / "server",
    ) as server:
        config_file = write_config(tmp_path, [secured_device(server.endpoint)])
        pki = Pki(tmp_path / "pki")
        pki.create_folders()
        (pki.trusted / "plant-ca.der").write_bytes(der(ca))
        config = load_config(config_file)
        device = config.devices[0]
        assert isinstance(device, OpcUaDevice)
        application = config.client_application(config_file)
        with pytest.raises(SourceError, match=f"server certificate {thumbprint(certificate)} is not trusted"):
            async with OpcUaSource(device, application=application):
                pass
        # Pinning the server's own certificate is what trusts it.
        pki.trust(thumbprint(certificate))
        source = OpcUaSource(device, application=application)
        async with source, aclosing(source.values()) as stream:
            assert {value.tag for value in await anext(stream)} == set(server.current())


async def test_a_pinned_client_only_certificate_is_refused_as_a_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, ca_key = make_ca()
    certificate, key = issue(ca, ca_key, application_uri=APPLICATION_URI, usages=[CLIENT_AUTH])
    write_server_identity(tmp_path / "server", certificate, key)
    async with InjectionMachineServer(
        port=0, update_interval_s=0.2, users=USERS, security=SECURED, certificate_dir=tmp_path / "server"
    ) as server:
        config_file = write_config(tmp_path, [secured_device(server.endpoint)])
        Pki(tmp_path / "pki").trust(str(tmp_path / "server" / "cert.der"))
        config = load_config(config_file)
        device = config.devices[0]
        assert isinstance(device, OpcUaDevice)
        with pytest.raises(SourceError, match="extended key usage does not include serverAuth"):
            async with OpcUaSource(device, application=config.client_application(config_file)):
                pass
    [event] = logged_events(caplog, "opcua_server_certificate_not_usable")
    assert event["thumbprint"] == thumbprint(certificate)
