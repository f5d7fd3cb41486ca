"""The Sparkplug B rules of mosquitto/make-logins.sh, checked with a real Mosquitto: an edge login speaks only for
its own edge node in its own group and reads only its own commands; only the ingestor sends commands and STATE."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.sparkplug import SPARKPLUG_FILTER, ncmd_topic, state_topic
from tests.support.mosquitto import MAKE_LOGINS, SEARCH_PATH, MosquittoBroker, running_mosquitto

pytestmark = pytest.mark.mosquitto

SUCCESS = 0
NOT_AUTHORIZED = 135
RECEIVE_TIMEOUT_S = 5.0
# DEFAULT_USERS of tests/support/mosquitto.py: `s1` is a login of site s1, so Sparkplug group s1, edge node s1.
MARKER = "spBv1.0/s1/NDATA/s1"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A broker of its own per test, so retained STATE messages never leak."""
    with running_mosquitto() as broker:
        yield broker


def client(broker: MosquittoBroker, username: str, **options: Any) -> aiomqtt.Client:
    """An MQTT 5 client of one of the broker's logins (a site login with its bound client id)."""
    if username != "ingestor":
        options.setdefault("identifier", username)
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=broker.users[username],
        protocol=aiomqtt.ProtocolVersion.V5,
        **options,
    )


def record_pubacks(client: aiomqtt.Client) -> list[int]:
    """The reason code of every PUBACK (aiomqtt's publish() ignores them)."""
    codes: list[int] = []
    forward = client._on_publish

    def record(paho: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties) -> None:
        codes.append(reason_code.value)
        forward(paho, userdata, mid, reason_code, properties)

    client._client.on_publish = record
    return codes


async def topics_until(watcher: aiomqtt.Client, marker: str) -> list[str]:
    """Topics received up to and including the first one on `marker` (QoS 1 keeps the order)."""
    topics: list[str] = []
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            async for message in watcher.messages:
                topics.append(str(message.topic))
                if str(message.topic) == marker:
                    return topics
    except TimeoutError:
        pass
    pytest.fail(f"marker {marker} never arrived; received {topics}")


async def granted(client: aiomqtt.Client, topic_filter: str) -> int:
    """The SUBACK code of one subscription."""
    (code,) = await client.subscribe(topic_filter, qos=1)
    return code if isinstance(code, int) else code.value


async def test_an_edge_login_publishes_its_own_nodes_births_data_and_deaths(broker: MosquittoBroker) -> None:
    own = [
        "spBv1.0/s1/NBIRTH/s1",
        "spBv1.0/s1/DBIRTH/s1/press-1",
        "spBv1.0/s1/DDATA/s1/press-1",
        "spBv1.0/s1/DDEATH/s1/press-1",
        "spBv1.0/s1/NDEATH/s1",
    ]
    async with client(broker, "ingestor") as host, client(broker, "s1") as edge:
        assert await granted(host, SPARKPLUG_FILTER) == 1
        pubacks = record_pubacks(edge)
        for topic in own:
            await edge.publish(topic, b"\x08\x01", qos=1)
        await edge.publish(MARKER, b"\x08\x01", qos=1)
        delivered = await topics_until(host, MARKER)
    assert delivered == [*own, MARKER]
    assert pubacks == [SUCCESS] * (len(own) + 1)


@pytest.mark.parametrize(
    "topic",
    [
        "spBv1.0/s2/NBIRTH/s1",  # another group (site)
        "spBv1.0/s1/NBIRTH/s2",  # another edge node of its group
        "spBv1.0/s1/DDATA/other/press-1",
        "spBv1.0/s1/NCMD/s1",  # commands come from hosts only
        "spBv1.0/s1/DCMD/s1/press-1",
        "spBv1.0/STATE/shopfloor",  # a host's state
        "spBv1.0/s1/DDATA/s1/press-1/extra",
    ],
)
async def test_an_edge_login_cannot_speak_for_others_nor_send_commands(broker: MosquittoBroker, topic: str) -> None:
    async with client(broker, "ingestor") as host, client(broker, "s1") as edge:
        await granted(host, SPARKPLUG_FILTER)
        pubacks = record_pubacks(edge)
        await edge.publish(topic, b"\x08\x01", qos=1)
        await edge.publish(MARKER, b"\x08\x01", qos=1)
        delivered = await topics_until(host, MARKER)
    assert pubacks == [NOT_AUTHORIZED, SUCCESS]
    assert delivered == [MARKER]


@pytest.mark.parametrize(
    ("topic_filter", "code"),
    [
        ("spBv1.0/s1/NCMD/s1/#", 1),  # what Tahu's client subscribes to
        ("spBv1.0/s1/DCMD/s1/#", 1),
        ("spBv1.0/STATE/+", 1),  # a primary host's state
        ("spBv1.0/s1/NCMD/+", NOT_AUTHORIZED),  # other nodes' commands
        ("spBv1.0/s2/NCMD/s1/#", NOT_AUTHORIZED),
        ("spBv1.0/#", NOT_AUTHORIZED),
        ("spBv1.0/s1/NDATA/+", NOT_AUTHORIZED),
    ],
)
async def test_an_edge_login_reads_only_its_own_commands_and_host_states(
    broker: MosquittoBroker, topic_filter: str, code: int
) -> None:
    async with client(broker, "s1") as edge:
        assert await granted(edge, topic_filter) == code


async def test_the_ingestor_sends_rebirth_requests_and_its_state(broker: MosquittoBroker) -> None:
    async with client(broker, "ingestor") as host, client(broker, "s1") as edge:
        await granted(edge, "spBv1.0/s1/NCMD/s1/#")
        await granted(edge, "spBv1.0/STATE/+")
        pubacks = record_pubacks(host)
        await host.publish(state_topic("shopfloor"), b'{"online": true, "timestamp": 1}', qos=1, retain=True)
        await host.publish(ncmd_topic("s1", "s1"), b"\x08\x01", qos=1)
        delivered = await topics_until(edge, ncmd_topic("s1", "s1"))
    assert pubacks == [SUCCESS, SUCCESS]
    assert delivered == [state_topic("shopfloor"), ncmd_topic("s1", "s1")]


@pytest.mark.parametrize(
    "topic",
    ["spBv1.0/STATE/another-host", "spBv1.0/s1/NDATA/s1", "spBv1.0/s1/DCMD/s1/press-1", "spBv1.0/s1/NCMD/s1/extra"],
)
async def test_the_ingestor_publishes_nothing_else_of_sparkplug(broker: MosquittoBroker, topic: str) -> None:
    async with client(broker, "ingestor") as watcher, client(broker, "ingestor") as host, client(broker, "s1") as edge:
        await granted(watcher, SPARKPLUG_FILTER)
        pubacks = record_pubacks(host)
        await host.publish(topic, b"\x08\x01", qos=1)
        await edge.publish(MARKER, b"\x08\x01", qos=1)
        delivered = await topics_until(watcher, MARKER)
    assert pubacks == [NOT_AUTHORIZED]
    assert delivered == [MARKER]


def make_logins(target: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run our script with exactly these variables (and a PATH that finds mosquitto_passwd)."""
    return subprocess.run(  # noqa: S603 -- our own script, no shell
        ["/bin/sh", str(MAKE_LOGINS), str(target)],
        env={"PATH": SEARCH_PATH, "MQTT_INGESTOR_PASSWORD": "long-enough-secret", **variables},
        capture_output=True,
        text=True,
        check=False,
    )


def test_make_logins_lets_the_ingestor_publish_the_state_of_the_listed_host_ids_only(tmp_path: Path) -> None:
    target = tmp_path / "dynamic-security.json"
    result = make_logins(
        target, MQTT_GATEWAY_LOGINS="gw-1@plant1:long-enough-secret", MQTT_SPARKPLUG_HOST_IDS="host-a,host-b"
    )
    assert result.returncode == 0, result.stderr
    roles = {role["rolename"]: role["acls"] for role in json.loads(target.read_text())["roles"]}
    sent = {acl["topic"] for acl in roles["ingestor"] if acl["acltype"] == "publishClientSend"}
    assert sent == {"spBv1.0/+/NCMD/+", "spBv1.0/STATE/host-a", "spBv1.0/STATE/host-b"}
    assert {acl["topic"] for acl in roles["edge-gw-1"] if acl["acltype"] == "publishClientSend"} == {
        "spBv1.0/plant1/NBIRTH/gw-1", "spBv1.0/plant1/NDATA/gw-1", "spBv1.0/plant1/NDEATH/gw-1",
        "spBv1.0/plant1/DBIRTH/gw-1/+", "spBv1.0/plant1/DDATA/gw-1/+", "spBv1.0/plant1/DDEATH/gw-1/+",
    }  # fmt: skip


@pytest.mark.parametrize("hosts", ["Host A", "host-a,,host-b", "host/a"])
def test_make_logins_refuses_a_host_id_that_is_no_code(tmp_path: Path, hosts: str) -> None:
    result = make_logins(
        tmp_path / "out.json", MQTT_GATEWAY_LOGINS="gw-1@plant1:long-enough-secret", MQTT_SPARKPLUG_HOST_IDS=hosts
    )
    assert result.returncode == 2
    assert "MQTT_SPARKPLUG_HOST_IDS" in result.stderr
    assert not (tmp_path / "out.json").exists()
