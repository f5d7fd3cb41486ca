"""Our broker config and logins script, checked with a real Mosquitto and real MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import MqttEndpoint, MqttTls, mqtt_client
from core.settings import IngestorSettings
from tests.support.mosquitto import (
    CONFIG_FILE,
    MAKE_LOGINS,
    SEARCH_PATH,
    MosquittoBroker,
    make_certificates,
    running_mosquitto,
)

pytestmark = pytest.mark.mosquitto

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311
SHARED_TELEMETRY = "$share/ingestors/shopfloor/v1/+/+/telemetry"
EVERYTHING_OURS = "shopfloor/v1/#"
# MQTT 5 reason codes.
SUCCESS = 0
NO_MATCHING_SUBSCRIBERS = 16
NOT_AUTHORIZED = 135
RECEIVE_TIMEOUT_S = 5.0
GOOD_PASSWORD = "long-enough-secret"
# Anything but a comma is allowed in a password: spaces, colons, glob characters.
AWKWARD_PASSWORD = "with spaces: colons * and ? globs"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A broker of its own per test (starts in ~50 ms), so retained messages and sessions never leak."""
    with running_mosquitto() as broker:
        yield broker


def client(
    broker: MosquittoBroker, username: str, *, protocol: aiomqtt.ProtocolVersion = V5, **options: Any
) -> aiomqtt.Client:
    """An aiomqtt client logged in as one of the broker's users (a gateway login with its bound client id)."""
    if username != "ingestor":
        options.setdefault("identifier", username)
    return aiomqtt.Client(
        broker.host, broker.port, username=username, password=broker.users[username], protocol=protocol, **options
    )


def record_pubacks(client: aiomqtt.Client) -> list[int]:
    """Collect the reason code of every PUBACK the client gets.

    aiomqtt 2.5.1's publish() waits for the PUBACK and ignores its reason code, so a publish refused by the
    ACL looks like a success. This chains a recorder in front of aiomqtt's own paho callback.
    """
    codes: list[int] = []
    forward = client._on_publish

    def record(paho: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties) -> None:
        codes.append(reason_code.value)
        forward(paho, userdata, mid, reason_code, properties)

    client._client.on_publish = record
    return codes


async def receive(subscriber: aiomqtt.Client, count: int) -> list[aiomqtt.Message]:
    """The next `count` messages, failing the test if they do not come."""
    received: list[aiomqtt.Message] = []
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            async for message in subscriber.messages:
                received.append(message)
                if len(received) == count:
                    break
    except TimeoutError:
        pytest.fail(f"expected {count} messages, got {[(str(m.topic), m.payload) for m in received]}")
    return received


async def topics_before_marker(watcher: aiomqtt.Client, marker_topic: str) -> list[str]:
    """Topics the watcher received up to and including the first message on `marker_topic`.

    Publish what must NOT arrive, then a marker that must: QoS 1 messages are delivered in order, so
    whatever got through shows up before the marker, without sleeping and hoping.
    """
    topics: list[str] = []
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            async for message in watcher.messages:
                topics.append(str(message.topic))
                if message.topic.value == marker_topic:
                    return topics
    except TimeoutError:
        pass
    pytest.fail(f"marker {marker_topic} never arrived; received {topics}")


def telemetry(value: float) -> bytes:
    """A contract v1 telemetry payload."""
    sample = {"ts": "2026-11-26T08:00:00.125Z", "values": {"barrel_temp_c": value}}
    return json.dumps({"seq": 1, "samples": [sample]}).encode()


# --- the config itself ------------------------------------------------------------------------------------

# The lines the tests replace to run on a free port in a temporary folder; everything else is the file as shipped.
SUBSTITUTED = {"listener", "persistence_location", "log_dest", "plugin", "plugin_opt_config_file"} | {
    "cafile",
    "certfile",
    "keyfile",
}


def options(text: str) -> dict[str, list[str]]:
    """Each option of a mosquitto.conf with its values, comments and blank lines left out."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            found.setdefault(name, []).append(value)
    return found


def test_the_broker_runs_our_config_with_only_the_paths_and_port_substituted(broker: MosquittoBroker) -> None:
    ours, running = options(CONFIG_FILE.read_text()), options(broker.config_file.read_text())
    assert running.keys() == ours.keys()
    assert {name for name in ours if running[name] != ours[name]} == SUBSTITUTED
    assert running["listener"] == [f"{port} {broker.host}" for port in (broker.port, broker.tls_port, broker.cert_port)]
    assert {Path(path).parent for name in ("cafile", "certfile", "keyfile") for path in running[name]} == {broker.certs}


def test_config_keeps_messages_and_fits_the_ingestors_ack_window() -> None:
    ours = options(CONFIG_FILE.read_text())
    assert ours["persistence"] == ["true"]
    assert ours["allow_anonymous"] == ["false"]
    # The ingestor holds up to INGEST_MAX_INFLIGHT messages un-acked until its batch commits; the broker must let it.
    assert int(ours["max_inflight_messages"][0]) >= IngestorSettings().ingest_max_inflight
    assert int(ours["max_queued_messages"][0]) >= 100 * IngestorSettings().ingest_max_inflight


# --- authentication ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_anonymous_connection_is_refused(broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion) -> None:
    with pytest.raises(MqttConnectError) as refused:
        async with aiomqtt.Client(broker.host, broker.port, protocol=protocol):
            pass
    # Mosquitto answers CONNACK 5 (3.1.1) / 135 (5); paho reports both as "Not authorized".
    assert isinstance(refused.value.rc, ReasonCode)
    assert refused.value.rc.value == NOT_AUTHORIZED


@pytest.mark.parametrize(
    ("username", "password"),
    [("s1", "not-the-s1-password"), ("ingestor", "s1-test-secret-01"), ("nobody", "some-long-password")],
    ids=["wrong-password", "another-users-password", "unknown-user"],
)
async def test_wrong_credentials_are_refused(broker: MosquittoBroker, username: str, password: str) -> None:
    with pytest.raises(MqttConnectError) as refused:
        async with aiomqtt.Client(broker.host, broker.port, username=username, password=password, protocol=V5):
            pass
    assert isinstance(refused.value.rc, ReasonCode)
    assert refused.value.rc.value == NOT_AUTHORIZED


# --- what a site may write -------------------------------------------------------------------------------


async def test_site_telemetry_reaches_the_ingestor_through_the_shared_subscription(broker: MosquittoBroker) -> None:
    async with client(broker, "ingestor") as ingestor, client(broker, "s1") as site:
        granted = await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
        assert [code.value for code in granted if isinstance(code, ReasonCode)] == [1]
        pubacks = record_pubacks(site)

        await site.publish("shopfloor/v1/s1/m1/telemetry", telemetry(212.5), qos=1)

        [message] = await receive(ingestor, 1)
    assert pubacks == [SUCCESS]
    assert str(message.topic) == "shopfloor/v1/s1/m1/telemetry"
    assert message.payload == telemetry(212.5)
    assert message.qos == 1


@pytest.mark.parametrize(
    "topic",
    ["shopfloor/v1/s1/m1/status", "shopfloor/v1/s1/_gateway/gw-1/status"],
    ids=["machine-status", "gateway-status"],
)
async def test_site_may_publish_its_retained_status(broker: MosquittoBroker, topic: str) -> None:
    payload = json.dumps({"online": True, "ts": "2026-11-26T08:00:00Z"}).encode()
    async with client(broker, "s1") as site:
        pubacks = record_pubacks(site)
        await site.publish(topic, payload, qos=1, retain=True)
    # The ingestor follows status topics and must get the retained value when it (re)subscribes.
    async with client(broker, "ingestor") as ingestor:
        await ingestor.subscribe(EVERYTHING_OURS, qos=1)
        [message] = await receive(ingestor, 1)
    assert pubacks == [NO_MATCHING_SUBSCRIBERS]  # accepted and retained; nobody was listening yet
    assert (str(message.topic), message.payload, message.retain) == (topic, payload, True)


async def test_gateway_will_on_its_own_status_topic_reaches_the_ingestor(broker: MosquittoBroker) -> None:
    will_topic = "shopfloor/v1/s1/_gateway/gw-1/status"
    # A separate mosquitto_pub process (reading lines from stdin, so it stays connected) plays the gateway, so it
    # can die for real (SIGKILL, no DISCONNECT).
    gateway = await asyncio.create_subprocess_exec(
        # stdbuf: mosquitto_pub's debug lines (-d) would otherwise sit in a block-buffered pipe.
        *("stdbuf", "-oL", "mosquitto_pub", "-d", "-l", "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5"),
        *("-u", "s1", "-P", broker.users["s1"], "-i", "s1", "-q", "1", "-t", "shopfloor/v1/s1/m1/telemetry"),
        *("--will-topic", will_topic, "--will-payload", '{"online": false}', "--will-qos", "1", "--will-retain"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={"PATH": SEARCH_PATH},
    )
    try:
        async with client(broker, "ingestor") as ingestor:
            await ingestor.subscribe(EVERYTHING_OURS, qos=1)
            assert gateway.stdout is not None
            async with asyncio.timeout(RECEIVE_TIMEOUT_S):
                while b"received CONNACK" not in await gateway.stdout.readline():
                    pass
            gateway.kill()
            [message] = await receive(ingestor, 1)
    finally:
        if gateway.returncode is None:
            gateway.kill()
        await gateway.wait()
    assert (str(message.topic), message.payload, message.qos) == (will_topic, b'{"online": false}', 1)


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_site_cannot_publish_telemetry_for_another_site(
    broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    async with client(broker, "ingestor") as ingestor, client(broker, "s1", protocol=protocol) as site:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
        pubacks = record_pubacks(site)

        await site.publish("shopfloor/v1/s2/m1/telemetry", telemetry(1.0), qos=1)
        await site.publish("shopfloor/v1/s1/m1/telemetry", telemetry(2.0), qos=1)

        delivered = await topics_before_marker(ingestor, "shopfloor/v1/s1/m1/telemetry")
    assert delivered == ["shopfloor/v1/s1/m1/telemetry"]
    # MQTT 5 tells the publisher; MQTT 3.1.1 has no reason code, so the refused message is acked as if taken.
    assert pubacks == ([NOT_AUTHORIZED, SUCCESS] if protocol is V5 else [SUCCESS, SUCCESS])


@pytest.mark.parametrize(
    "topic",
    [
        "shopfloor/v1/s2/m1/status",
        "shopfloor/v1/s2/_gateway/gw-1/status",
        "shopfloor/v1/s1/m1/command",
        "shopfloor/v1/s1/m1/telemetry/extra",
        "shopfloor/v2/s1/m1/telemetry",
    ],
)
async def test_site_cannot_write_outside_its_contract_topics(broker: MosquittoBroker, topic: str) -> None:
    marker = "shopfloor/v1/s1/m1/telemetry"
    async with client(broker, "ingestor") as ingestor, client(broker, "s1") as site:
        await ingestor.subscribe(EVERYTHING_OURS, qos=1)
        pubacks = record_pubacks(site)

        await site.publish(topic, b"{}", qos=1)
        await site.publish(marker, telemetry(1.0), qos=1)

        delivered = await topics_before_marker(ingestor, marker)
    assert pubacks == [NOT_AUTHORIZED, SUCCESS]
    assert delivered == [marker]


# --- what the ingestor may do ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["shopfloor/v1/s1/m1/telemetry", "shopfloor/v1/s1/m1/status", "shopfloor/v1/ingestor/m1/telemetry"],
    ids=["site-telemetry", "site-status", "own-name-as-site"],
)
async def test_ingestor_cannot_publish(broker: MosquittoBroker, topic: str) -> None:
    marker = "shopfloor/v1/s1/m1/telemetry"
    async with (
        client(broker, "ingestor") as watcher,
        client(broker, "ingestor") as ingestor,
        client(broker, "s1") as site,
    ):
        await watcher.subscribe(EVERYTHING_OURS, qos=1)
        pubacks = record_pubacks(ingestor)

        await ingestor.publish(topic, telemetry(1.0), qos=1)
        await site.publish(marker, telemetry(2.0), qos=1)

        delivered = await topics_before_marker(watcher, marker)
    assert pubacks == [NOT_AUTHORIZED]
    assert delivered == [marker]


async def test_ingestors_split_the_shared_subscription(broker: MosquittoBroker) -> None:
    total = 20
    async with (
        client(broker, "ingestor", identifier="ingestor-a") as first,
        client(broker, "ingestor", identifier="ingestor-b") as second,
        client(broker, "s1") as site,
    ):
        await first.subscribe(SHARED_TELEMETRY, qos=1)
        await second.subscribe(SHARED_TELEMETRY, qos=1)
        for number in range(total):
            await site.publish(f"shopfloor/v1/s1/m{number}/telemetry", telemetry(number), qos=1)
        async with asyncio.TaskGroup() as group:
            # Mosquitto hands shared messages out round robin: each member gets half.
            got_first = group.create_task(receive(first, total // 2))
            got_second = group.create_task(receive(second, total // 2))
    topics = [str(message.topic) for message in got_first.result() + got_second.result()]
    assert sorted(topics) == sorted(f"shopfloor/v1/s1/m{number}/telemetry" for number in range(total))


# --- what a site may read --------------------------------------------------------------------------------


def suback_codes(granted: Sequence[ReasonCode | int]) -> list[int]:
    """The reason code of each subscription of a SUBACK (MQTT 5)."""
    return [code.value if isinstance(code, ReasonCode) else code for code in granted]


@pytest.mark.parametrize(
    "topic_filter",
    ["shopfloor/v1/s2/#", "shopfloor/v1/+/+/telemetry", "#", "shopfloor/v1/s1/#", "$share/other/shopfloor/v1/#"],
    ids=["other-site", "every-site", "everything", "own-site", "another-share-group"],
)
async def test_site_cannot_read_other_sites(broker: MosquittoBroker, topic_filter: str) -> None:
    status = json.dumps({"online": True, "ts": "2026-11-26T08:00:00Z"}).encode()
    async with (
        client(broker, "ingestor") as witness,
        client(broker, "s1") as snooper,
        client(broker, "s2") as other_site,
    ):
        await witness.subscribe(EVERYTHING_OURS, qos=1)
        await other_site.publish("shopfloor/v1/s2/m1/status", status, qos=1, retain=True)
        # A gateway login subscribes to nothing: the plugin refuses the SUBSCRIBE itself.
        granted = await snooper.subscribe(topic_filter, qos=1)
        await other_site.publish("shopfloor/v1/s2/m1/telemetry", telemetry(3.0), qos=1)

        witnessed = await receive(witness, 2)
        # A SUBACK comes after anything the broker sent this client before it, retained messages included.
        await snooper.subscribe("shopfloor/v1/s1/m1/telemetry", qos=1)
        leaked = len(snooper.messages)
    assert suback_codes(granted) == [NOT_AUTHORIZED]
    assert [str(message.topic) for message in witnessed] == [
        "shopfloor/v1/s2/m1/status",
        "shopfloor/v1/s2/m1/telemetry",
    ]
    assert leaked == 0


async def test_a_device_login_cannot_join_the_ingestors_share_group(broker: MosquittoBroker) -> None:
    """Finding 3: with acl_file the SUBSCRIBE was granted and the round robin dropped every other message.

    Now the plugin refuses the intruder's SUBSCRIBE, so it is never a member and every message reaches the
    ingestors.
    """
    async with (
        client(broker, "ingestor") as ingestor,
        client(broker, "s2") as intruder,
        client(broker, "s1") as site,
    ):
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
        granted = await intruder.subscribe(SHARED_TELEMETRY, qos=1)
        for value in range(6):
            await site.publish("shopfloor/v1/s1/m1/telemetry", telemetry(value), qos=1)
        received = await receive(ingestor, 6)
    assert suback_codes(granted) == [NOT_AUTHORIZED]
    assert [message.payload for message in received] == [telemetry(value) for value in range(6)]


# --- commands to machines --------------------------------------------------------------------------------

COMMAND_USERS = {
    "ingestor": GOOD_PASSWORD,
    "shopfloor-api": GOOD_PASSWORD,
    "gw-press": GOOD_PASSWORD,
    "gw-assembly": GOOD_PASSWORD,
    "device": GOOD_PASSWORD,
}
COMMAND_SITES = {"gw-press": "plant/press-1", "gw-assembly": "plant/assembly-1+assembly-2", "device": "plant"}
PRESS_COMMAND = "shopfloor/v1/plant/press-1/command"
ASSEMBLY_COMMAND = "shopfloor/v1/plant/assembly-1/command"


async def test_only_the_api_sends_commands_and_each_gateway_gets_only_its_machines() -> None:
    with running_mosquitto(users=COMMAND_USERS, sites=COMMAND_SITES) as broker:
        async with (
            client(broker, "shopfloor-api") as api,
            client(broker, "gw-press") as press,
            client(broker, "gw-assembly") as assembly,
            client(broker, "device") as device,
            client(broker, "ingestor", identifier="ingestor-1") as ingestor,
        ):
            own = await press.subscribe(PRESS_COMMAND, qos=1)
            # Another machine's commands, every machine's, and a device's reach for any command: refused.
            foreign = [
                await press.subscribe(topic, qos=1) for topic in (ASSEMBLY_COMMAND, "shopfloor/v1/plant/+/command")
            ]
            snooping = await device.subscribe("shopfloor/v1/plant/+/command", qos=1)
            await assembly.subscribe(ASSEMBLY_COMMAND, qos=1)
            forged = {name: record_pubacks(login) for name, login in (("press", press), ("device", device))}
            forged["ingestor"] = record_pubacks(ingestor)

            # A gateway, a device and the ingestor cannot send commands; the API can, to any machine.
            await press.publish(PRESS_COMMAND, b"{}", qos=1)
            await device.publish(PRESS_COMMAND, b"{}", qos=1)
            await ingestor.publish(PRESS_COMMAND, b"{}", qos=1)
            await api.publish(ASSEMBLY_COMMAND, b'{"for": "assembly"}', qos=1)
            await api.publish(PRESS_COMMAND, b'{"for": "press"}', qos=1)
            [to_press] = await receive(press, 1)
            [to_assembly] = await receive(assembly, 1)
    assert suback_codes(own) == [1]  # granted, QoS 1
    assert [suback_codes(granted) for granted in foreign] == [[NOT_AUTHORIZED], [NOT_AUTHORIZED]]
    assert suback_codes(snooping) == [NOT_AUTHORIZED]
    assert forged == {"press": [NOT_AUTHORIZED], "device": [NOT_AUTHORIZED], "ingestor": [NOT_AUTHORIZED]}
    # Only the API's command reached each gateway (the forged one to the press came first and did not).
    assert to_press.payload == b'{"for": "press"}'
    assert to_assembly.payload == b'{"for": "assembly"}'


@pytest.mark.parametrize("taken", ["gw-press", "ingestor-1"])
async def test_the_api_login_cannot_take_over_a_gateways_or_the_ingestors_session(taken: str) -> None:
    """Review finding: unbound, the API's login could connect with a gateway's client id and clean start, wiping the
    commands queued in its session (or the ingestor's telemetry queue). It is bound to `shopfloor-api` now."""
    with running_mosquitto(users=COMMAND_USERS, sites=COMMAND_SITES) as broker, pytest.raises(MqttConnectError):
        async with client(broker, "shopfloor-api", identifier=taken):
            pass


async def test_a_gateway_answers_only_its_machines_commands_and_the_ingestor_hears_it() -> None:
    with running_mosquitto(users=COMMAND_USERS, sites=COMMAND_SITES) as broker:
        async with (
            client(broker, "gw-press") as press,
            client(broker, "device") as device,
            client(broker, "ingestor", identifier="ingestor-1") as ingestor,
        ):
            await ingestor.subscribe("$share/ingestors/shopfloor/v1/+/+/command/result", qos=1)
            pubacks = {"press": record_pubacks(press), "device": record_pubacks(device)}
            await press.publish(f"{ASSEMBLY_COMMAND}/result", b"{}", qos=1)
            await device.publish(f"{PRESS_COMMAND}/result", b"{}", qos=1)
            await press.publish(f"{PRESS_COMMAND}/result", b'{"status": "done"}', qos=1)
            [heard] = await receive(ingestor, 1)
    assert pubacks == {"press": [NOT_AUTHORIZED, SUCCESS], "device": [NOT_AUTHORIZED]}
    assert (str(heard.topic), heard.payload) == (f"{PRESS_COMMAND}/result", b'{"status": "done"}')


# --- persistent sessions and broker persistence ----------------------------------------------------------


def persistent_subscriber(broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion = V5) -> aiomqtt.Client:
    """The ingestor's way to connect: fixed client id and a session that outlives the connection."""
    if protocol is V5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho leaves __init__ bare
        # Without an expiry interval an MQTT 5 session ends with the connection, clean_start or not.
        properties.SessionExpiryInterval = 3600
        return client(
            broker, "ingestor", protocol=V5, identifier="ingestor-1", clean_start=False, properties=properties
        )
    return client(broker, "ingestor", protocol=V311, identifier="ingestor-1", clean_session=False)


async def publish_telemetry(broker: MosquittoBroker, values: range) -> list[int]:
    """Publish one telemetry message per value as site s1 (MQTT 5); the PUBACK reason codes."""
    async with client(broker, "s1") as site:
        pubacks = record_pubacks(site)
        for value in values:
            await site.publish("shopfloor/v1/s1/m1/telemetry", telemetry(value), qos=1)
    return pubacks


async def drain(subscriber: aiomqtt.Client, quiet_s: float = 2.0) -> list[aiomqtt.Message]:
    """Whatever arrives until nothing has come for `quiet_s`."""
    received: list[aiomqtt.Message] = []
    with contextlib.suppress(TimeoutError):
        while True:
            async with asyncio.timeout(quiet_s):
                received.append(await anext(aiter(subscriber.messages)))
    return received


async def test_a_site_login_cannot_take_over_the_ingestors_session(broker: MosquittoBroker) -> None:
    async with persistent_subscriber(broker) as ingestor:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
    assert await publish_telemetry(broker, range(5)) == [SUCCESS] * 5

    # The attack from finding 1: a gateway login connects with the ingestor's (fixed, public) client id and a
    # clean start, which would discard the ingestor's session and the 5 messages queued for it. The plugin binds
    # the login to its own client id and refuses the connection.
    with pytest.raises(MqttConnectError) as refused:
        async with client(broker, "s1", identifier="ingestor-1", clean_start=True):
            pass
    assert isinstance(refused.value.rc, ReasonCode)
    assert refused.value.rc.value == NOT_AUTHORIZED

    async with persistent_subscriber(broker) as ingestor:
        received = await drain(ingestor)
    assert [message.payload for message in received] == [telemetry(value) for value in range(5)]


async def test_a_live_ingestor_is_not_kicked_off_by_a_login_using_its_client_id(broker: MosquittoBroker) -> None:
    async with persistent_subscriber(broker) as ingestor:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
        with pytest.raises(MqttConnectError):
            async with client(broker, "s2", identifier="ingestor-1"):
                pass
        # Still the same connection: what s1 publishes now arrives without a reconnect.
        await publish_telemetry(broker, range(1))
        [message] = await receive(ingestor, 1)
    assert message.payload == telemetry(0)
    assert "already connected, closing old connection" not in broker.log()


async def test_a_gateway_login_cannot_use_another_gateways_client_id(broker: MosquittoBroker) -> None:
    with pytest.raises(MqttConnectError):
        async with client(broker, "s1", identifier="s2"):
            pass


async def test_a_certificate_cannot_take_over_the_ingestors_session(broker: MosquittoBroker) -> None:
    """The client-certificate listener skips the plugin's password check (and its client-id binding); the listener
    forces the client id to the certificate's name instead, so the ingestor's id is out of reach there too."""
    async with persistent_subscriber(broker) as ingestor:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
    assert await publish_telemetry(broker, range(5)) == [SUCCESS] * 5

    async with tls_client(broker, broker.cert_port, cert="s1", identifier="ingestor-1", clean_start=True):
        pass

    async with persistent_subscriber(broker) as ingestor:
        received = await drain(ingestor)
    assert [message.payload for message in received] == [telemetry(value) for value in range(5)]
    assert "as s1 (p5, c1" in broker.log()


@pytest.mark.parametrize("topic_filter", [SHARED_TELEMETRY, "shopfloor/v1/+/+/telemetry"], ids=["shared", "plain"])
@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_persistent_session_gets_what_was_published_while_away(
    broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion, topic_filter: str
) -> None:
    async with persistent_subscriber(broker, protocol) as ingestor:
        await ingestor.subscribe(topic_filter, qos=1)
    assert await publish_telemetry(broker, range(3)) == [SUCCESS] * 3

    # Same client id, no new SUBSCRIBE: the broker kept the session, its subscription and the messages.
    async with persistent_subscriber(broker, protocol) as ingestor:
        received = await receive(ingestor, 3)
    assert [message.payload for message in received] == [telemetry(value) for value in range(3)]


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_persistent_session_and_its_queue_survive_a_broker_restart(
    broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    async with persistent_subscriber(broker, protocol) as ingestor:
        await ingestor.subscribe("shopfloor/v1/+/+/telemetry", qos=1)
    await publish_telemetry(broker, range(3))
    broker.stop()  # SIGTERM: Mosquitto writes sessions, subscriptions and queued messages to mosquitto.db
    broker.start()
    assert await publish_telemetry(broker, range(3, 6)) == [SUCCESS] * 3

    async with persistent_subscriber(broker, protocol) as ingestor:
        received = await receive(ingestor, 6)
    assert [message.payload for message in received] == [telemetry(value) for value in range(6)]


async def test_broker_restart_keeps_the_shared_backlog_but_forgets_the_shared_subscription(
    broker: MosquittoBroker,
) -> None:
    """Mosquitto 2.0.11 does not write `$share/...` subscriptions to mosquitto.db.

    After a restart the ingestor's session and its queued messages are back, but until it subscribes again
    nothing matches: telemetry is acknowledged with reason code 16 (no matching subscribers) and dropped.
    So the ingestor subscribes on every connect, session present or not.
    """
    async with persistent_subscriber(broker) as ingestor:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
    await publish_telemetry(broker, range(3))
    broker.stop()
    broker.start()
    assert await publish_telemetry(broker, range(3, 6)) == [NO_MATCHING_SUBSCRIBERS] * 3

    async with persistent_subscriber(broker) as ingestor:
        backlog = await receive(ingestor, 3)
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
        await publish_telemetry(broker, range(6, 7))
        [after_resubscribe] = await receive(ingestor, 1)
    assert [message.payload for message in backlog] == [telemetry(value) for value in range(3)]
    assert after_resubscribe.payload == telemetry(6)


async def test_persistent_session_keeps_more_than_mosquittos_default_1000_queued_messages(
    broker: MosquittoBroker,
) -> None:
    count = 1500  # the default max_queued_messages 1000 would silently drop the last 500
    async with persistent_subscriber(broker) as ingestor:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
    await publish_telemetry(broker, range(count))
    async with persistent_subscriber(broker) as ingestor:
        received = await receive(ingestor, count)
    assert [message.payload for message in received] == [telemetry(value) for value in range(count)]


async def test_ingestor_may_hold_a_batch_of_1000_unacknowledged_messages(broker: MosquittoBroker) -> None:
    """max_inflight_messages 1000: the ingestor acks only after its batch commits (default: stuck at 20)."""
    async with persistent_subscriber(broker) as ingestor:
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
    await publish_telemetry(broker, range(1200))

    ingestor = persistent_subscriber(broker)
    # aiomqtt 2.5.1 acknowledges on arrival; manual ack exists only on its paho client.
    ingestor._client.manual_ack_set(True)
    async with ingestor:
        batch = await receive(ingestor, 1000)
        # A SUBACK comes after every message the broker was willing to send before it.
        await ingestor.subscribe("shopfloor/v1/s1/m1/status", qos=1)
        held_back = len(ingestor.messages)
        ingestor._client.ack(batch[0].mid, 1)
        [next_message] = await receive(ingestor, 1)
    assert [message.payload for message in batch] == [telemetry(value) for value in range(1000)]
    assert held_back == 0
    assert next_message.payload == telemetry(1000)


# --- make-logins.sh --------------------------------------------------------------------------------------


def make_logins(
    target: Path, *, shell: str = "/bin/sh", path: str = SEARCH_PATH, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run our script with exactly these variables (and a PATH that finds mosquitto_passwd)."""
    return subprocess.run(  # noqa: S603 -- our own script, no shell
        [shell, str(MAKE_LOGINS), str(target)],
        env={"PATH": path, **variables},
        capture_output=True,
        text=True,
        check=False,
    )


INGESTOR = {"MQTT_INGESTOR_PASSWORD": GOOD_PASSWORD}


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, "MQTT_INGESTOR_PASSWORD"),
        ({"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD}"}, "MQTT_INGESTOR_PASSWORD"),
        (INGESTOR, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": ""}, "MQTT_GATEWAY_LOGINS"),
        ({"MQTT_INGESTOR_PASSWORD": "eleven-char", "MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD}"}, "INGESTOR"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD},gw2@s1:eleven-char"}, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1:{GOOD_PASSWORD}"}, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"GW1@s1:{GOOD_PASSWORD}"}, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@S 1:{GOOD_PASSWORD}"}, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"ingestor@s1:{GOOD_PASSWORD}"}, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD},gw1@s2:{GOOD_PASSWORD}"}, "listed twice"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD},"}, "MQTT_GATEWAY_LOGINS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD}", "MQTT_INGESTOR_GROUPS": "a,$x"}, "GROUPS"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"shopfloor-ingestor-1@s1:{GOOD_PASSWORD}"}, "reserved"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"ingestor-2@s1:{GOOD_PASSWORD}"}, "reserved"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{'x' * 1025}"}, "longer than 1024"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD}", "MQTT_INGESTOR_LOGINS": "reader"}, "ingestor"),
        (INGESTOR | {"MQTT_GATEWAY_LOGINS": f"gw1@s1:{GOOD_PASSWORD},Secret-Part-Two"}, "entry 2"),
    ],
    ids=[
        "nothing-set",
        "ingestor-missing",
        "logins-missing",
        "logins-empty",
        "ingestor-short",
        "login-short",
        "login-without-site",
        "login-invalid",
        "site-invalid",
        "login-named-ingestor",
        "login-twice",
        "empty-entry",
        "group-invalid",
        "login-named-like-an-ingestor-id",
        "login-named-ingestor-prefix",
        "password-too-long",
        "certificate-ingestor-not-named-ingestor",
        "password-with-a-comma",
    ],
)
def test_make_logins_refuses_missing_or_weak_settings(tmp_path: Path, variables: dict[str, str], named: str) -> None:
    target = tmp_path / "dynamic-security.json"
    result = make_logins(target, **variables)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert named in result.stderr
    assert "eleven-char" not in result.stderr  # a refusal never echoes a password
    assert "Secret-Part-Two" not in result.stderr  # nor a piece of one cut at a comma
    assert not target.exists()


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"], ids=["dash", "bash"])
def test_make_logins_writes_the_same_rules_under_either_shell(tmp_path: Path, shell: str) -> None:
    """bash keeps some variable names for itself (GROUPS): the script must mean the same under both shells."""
    target = tmp_path / "dynamic-security.json"
    result = make_logins(
        target,
        shell=shell,
        MQTT_INGESTOR_PASSWORD=GOOD_PASSWORD,
        MQTT_INGESTOR_GROUPS="ingestors,night-shift",
        MQTT_INGESTOR_LOGINS="ingestor-1,ingestor-2",
        MQTT_GATEWAY_LOGINS=f"gw1@s1:{AWKWARD_PASSWORD}",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(target.read_text())
    [ingestor_role] = [role for role in document["roles"] if role["rolename"] == "ingestor"]
    shared = sorted(acl["topic"] for acl in ingestor_role["acls"] if acl["topic"].startswith("$share/"))
    assert shared == ["$share/ingestors/shopfloor/v1/#", "$share/night-shift/shopfloor/v1/#"]
    certificate_ingestors = [entry for entry in document["clients"] if entry["username"].startswith("ingestor-")]
    assert [(entry["username"], entry["clientid"], "password" in entry) for entry in certificate_ingestors] == [
        ("ingestor-1", "ingestor-1", False),
        ("ingestor-2", "ingestor-2", False),
    ]


def test_make_logins_writes_nothing_when_hashing_fails(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mosquitto_passwd").write_text("#!/bin/sh\necho 'Error: cannot hash' >&2\nexit 1\n")
    (fake / "mosquitto_passwd").chmod(0o755)
    target = tmp_path / "dynamic-security.json"
    result = make_logins(
        target,
        path=f"{fake}{os.pathsep}{SEARCH_PATH}",
        MQTT_INGESTOR_PASSWORD=GOOD_PASSWORD,
        MQTT_GATEWAY_LOGINS=f"gw1@s1:{GOOD_PASSWORD}",
    )
    assert result.returncode != 0
    assert "cannot hash" in result.stderr
    assert list(tmp_path.glob("dynamic-security.json*")) == []  # neither the file nor a half-written one


def test_make_logins_writes_a_private_file_with_one_login_per_gateway(tmp_path: Path) -> None:
    target = tmp_path / "dynamic-security.json"
    result = make_logins(
        target,
        MQTT_INGESTOR_PASSWORD=GOOD_PASSWORD,
        MQTT_GATEWAY_LOGINS=f"gw-hall1@plant-1:{GOOD_PASSWORD},gw_2@plant-1:{AWKWARD_PASSWORD},cert-only@plant2",
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    document = json.loads(target.read_text())
    clients = {entry["username"]: entry for entry in document["clients"]}
    assert list(clients) == ["ingestor", "gw-hall1", "gw_2", "cert-only"]
    assert {name: entry.get("clientid") for name, entry in clients.items()} == {
        "ingestor": None,  # several ingestors share the login, each with its own id
        "gw-hall1": "gw-hall1",
        "gw_2": "gw_2",
        "cert-only": "cert-only",
    }
    assert "password" not in clients["cert-only"]  # only the certificate listener lets it in
    assert [[role["rolename"] for role in entry["roles"]] for entry in clients.values()] == [
        ["ingestor"],
        ["site-plant-1", "edge-gw-hall1"],  # edge-<login>: its own Sparkplug edge node (test_sparkplug_broker.py)
        ["site-plant-1", "edge-gw_2"],
        ["site-plant2", "edge-cert-only"],
    ]
    assert document["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert GOOD_PASSWORD not in target.read_text()
    if os.geteuid() == 0:
        assert target.owner() == "mosquitto"


async def test_logins_made_by_the_script_log_in() -> None:
    users = {"ingestor": GOOD_PASSWORD, "gw-a": AWKWARD_PASSWORD}
    with running_mosquitto(users=users, sites={"gw-a": "plant_2"}) as broker:
        async with client(broker, "gw-a") as gateway, client(broker, "ingestor") as ingestor:
            await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
            pubacks = record_pubacks(gateway)
            await gateway.publish("shopfloor/v1/gw-a/m1/telemetry", telemetry(0.0), qos=1)  # its name, not its site
            await gateway.publish("shopfloor/v1/plant_2/m1/telemetry", telemetry(1.0), qos=1)
            [message] = await receive(ingestor, 1)
    assert pubacks == [NOT_AUTHORIZED, SUCCESS]
    assert str(message.topic) == "shopfloor/v1/plant_2/m1/telemetry"


# --- TLS listeners (certificates made by our make-certs.sh) -----------------------------------------------------


def tls_client(
    broker: MosquittoBroker,
    port: int,
    *,
    username: str | None = None,
    cert: str | None = None,
    ca: Path | None = None,
    **options: Any,
) -> aiomqtt.Client:
    """A client built by core's factory, over TLS, with a password or a client certificate (CN = `cert`)."""
    files = {"cert_file": broker.certs / f"{cert}.crt", "key_file": broker.certs / f"{cert}.key"} if cert else {}
    endpoint = MqttEndpoint(
        host=broker.host,
        port=port,
        username=username,
        password=broker.users[username] if username else None,
        tls=MqttTls(ca_file=ca or broker.certs / "ca.crt", **files),
    )
    # A gateway login's client id is bound to it; on the certificate listener the broker sets it to the CN anyway.
    options.setdefault(
        "identifier", username if username not in (None, "ingestor") else f"tls-{username or cert}-{port}"
    )
    return mqtt_client(endpoint, **options)


# paho 2.2 does not close the socket of a failed TLS handshake; the garbage collector does, with a
# ResourceWarning. Collected inside the test so the warning is attributed (and allowed) here, not to a later one.
PAHO_LEAVES_FAILED_TLS_SOCKET = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)


async def refused_over_tls(connecting: aiomqtt.Client, match: str | None = None) -> None:
    """Connecting fails (with `match` in the error); paho's unclosed socket is collected right away."""
    with pytest.raises(aiomqtt.MqttError, match=match):
        async with connecting:
            pass
    gc.collect()


async def test_tls_listener_carries_telemetry_from_a_password_login(broker: MosquittoBroker) -> None:
    async with (
        tls_client(broker, broker.tls_port, username="ingestor") as ingestor,
        tls_client(broker, broker.tls_port, username="s1") as site,
    ):
        await ingestor.subscribe(SHARED_TELEMETRY, qos=1)
        pubacks = record_pubacks(site)
        await site.publish("shopfloor/v1/s1/m1/telemetry", telemetry(7.5), qos=1)
        [message] = await receive(ingestor, 1)
    assert pubacks == [SUCCESS]
    assert message.payload == telemetry(7.5)


@PAHO_LEAVES_FAILED_TLS_SOCKET
async def test_tls_client_refuses_a_broker_signed_by_another_ca(broker: MosquittoBroker, tmp_path: Path) -> None:
    make_certificates(tmp_path / "other", [])
    other_ca = tmp_path / "other" / "ca.crt"
    await refused_over_tls(tls_client(broker, broker.tls_port, username="s1", ca=other_ca), "certificate verify failed")


@PAHO_LEAVES_FAILED_TLS_SOCKET
async def test_tls_client_checks_the_brokers_name(broker: MosquittoBroker) -> None:
    # Same CA, but a server certificate for another host: only the name check can catch it.
    broker.stop()
    make_certificates(broker.certs, [], server_names="broker.elsewhere.example")
    broker.start()
    await refused_over_tls(tls_client(broker, broker.tls_port, username="s1"), "mismatch")


async def test_plain_client_gets_nothing_from_the_tls_listener(broker: MosquittoBroker) -> None:
    plain = aiomqtt.Client(broker.host, broker.tls_port, username="s1", password=broker.users["s1"], timeout=2)
    await refused_over_tls(plain)


@PAHO_LEAVES_FAILED_TLS_SOCKET
async def test_certificate_listener_refuses_a_client_without_certificate(broker: MosquittoBroker) -> None:
    # TLS 1.3: the handshake completes on the client's side before the broker checks for a certificate and hangs
    # up, so the client sees the connection closed while it waits for CONNACK.
    await refused_over_tls(tls_client(broker, broker.cert_port, username="s1", timeout=2))
    assert "peer did not return a certificate" in broker.log()


async def test_certificate_listener_logs_in_as_the_certificates_name(broker: MosquittoBroker) -> None:
    # No password at all; the CN `s1` is the login, so the ACL gives exactly s1's topics.
    async with (
        tls_client(broker, broker.cert_port, cert="ingestor") as ingestor,
        tls_client(broker, broker.cert_port, cert="s1") as site,
    ):
        await ingestor.subscribe(EVERYTHING_OURS, qos=1)
        pubacks = record_pubacks(site)
        await site.publish("shopfloor/v1/s2/m1/telemetry", telemetry(1.0), qos=1)
        await site.publish("shopfloor/v1/s1/m1/telemetry", telemetry(2.0), qos=1)
        [message] = await receive(ingestor, 1)
    assert pubacks == [NOT_AUTHORIZED, SUCCESS]
    assert str(message.topic) == "shopfloor/v1/s1/m1/telemetry"
