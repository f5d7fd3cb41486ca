"""The ingestor against real Mosquitto and real PostgreSQL: stored once, crash-safe, outage-safe, bad input kept."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import httpx
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import ingestor.service
from core.contract import status_topic, telemetry_topic
from core.db import session_factory
from core.ingest import IngestBatch, WriteResult
from core.models import DeadLetter, Machine, MachineLatest, Reading, TelemetrySeq
from ingestor.ack import ack, enable_manual_ack
from ingestor.service import Ingestor
from tests.support.mosquitto import MosquittoBroker
from tests.support.pipeline import (
    PASSWORDS,
    SITE,
    Identity,
    IngestorProcess,
    fresh_group,
    ingestor_env,
    publish,
    reading_count,
    running_ingestor,
    stream_payloads,
    unique,
    wait_for_count,
)
from tests.support.postgres import PostgresServer, free_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres]
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


async def test_published_readings_are_stored_once(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine = unique("press")
    payloads = stream_payloads(machine, messages=20, samples=5, tags=4)
    async with running_ingestor(broker, ingest_database, pipeline_engine) as ingestor:
        await publish(broker, telemetry_topic(SITE, machine), payloads)
        assert await wait_for_count(pipeline_engine, 20 * 5 * 4) == 400
        # The same messages again, as a gateway replaying its buffer would: nothing new is stored.
        await publish(broker, telemetry_topic(SITE, machine), payloads)
        await asyncio.sleep(1.0)
        assert await reading_count(pipeline_engine) == 400
        duplicates = ingestor.metrics.duplicates._value.get()
    assert duplicates == 400
    async with session_factory(pipeline_engine)() as session:
        registered = (await session.scalars(select(Machine).where(Machine.code == machine))).one()
        latest = await session.scalars(select(MachineLatest).where(MachineLatest.machine_id == registered.id))
        values = {row.tag: row.value for row in latest}
    assert registered.auto_registered is True
    # The newest sample of message 19 is sample 4: 19 * 1000 + 4 * 10 + tag.
    assert values == {f"t{tag}": 19040.0 + tag for tag in range(4)}


async def test_mosquitto_pub_single_sample_shorthand(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine = unique("plc")
    now = datetime.now(UTC).isoformat()
    payload = f'{{"ts": "{now}", "values": {{"barrel_temp_c": 212.5, "door_open": true, "state": "running"}}}}'
    async with running_ingestor(broker, ingest_database, pipeline_engine):
        process = await asyncio.create_subprocess_exec(
            MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-u", SITE, "-P", PASSWORDS[SITE],
            "-i", SITE, "-q", "1", "-t", telemetry_topic(SITE, machine), "-m", payload, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr
        assert await wait_for_count(pipeline_engine, 2) == 2
    async with session_factory(pipeline_engine)() as session:
        rows = (await session.execute(select(Reading.tag, Reading.value).order_by(Reading.tag))).all()
    assert [tuple(row) for row in rows] == [("barrel_temp_c", 212.5), ("door_open", 1.0)]


MALFORMED: list[tuple[str, bytes]] = [
    ("shopfloor/v1/plant1/bad/telemetry", b"not json at all"),
    ("shopfloor/v1/plant1/bad/telemetry", b"\xff\xfe\x00garbage"),
    ("shopfloor/v1/plant1/bad/telemetry", b"[]"),
    ("shopfloor/v1/plant1/bad/telemetry", b"{}"),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"samples": []}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2026-11-26T08:00:00", "values": {"a": 1}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2026-11-26T08:00:00Z", "values": {"a": NaN}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1e999}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2026-11-26T08:00:00Z", "values": {"Bad Tag": 1}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2026-11-26T08:00:00Z", "values": {"state": "exploded"}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2026-11-26T08:00:00Z", "values": {"a": "text"}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "1999-01-01T00:00:00Z", "values": {"a": 1}}'),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"ts": "2999-01-01T00:00:00Z", "values": {"a": 1}}'),
    (
        "shopfloor/v1/plant1/bad/telemetry",
        b'{"seq": -1, "samples": [{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1}}]}',
    ),
    ("shopfloor/v1/plant1/bad/telemetry", b'{"samples": [{"ts": "x", "values": {}}], "extra": 1}'),
    ("shopfloor/v1/plant1/bad/telemetry", b"{" * 10_000),
    ("shopfloor/v1/plant1/BAD_CODE/telemetry", b'{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1}}'),
    ("shopfloor/v1/plant1/bad/status", b"online"),
]


async def test_bad_input_is_dead_lettered_and_the_good_around_it_is_stored(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine = unique("good")
    good = stream_payloads(machine, messages=10, samples=2, tags=3)
    rng = random.Random(20261126)
    noise = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(30)]
    corpus = [*MALFORMED, *((telemetry_topic(SITE, "noise"), payload) for payload in noise)]
    async with running_ingestor(broker, ingest_database, pipeline_engine) as ingestor:
        await publish(broker, telemetry_topic(SITE, machine), good[:5])
        async with aiomqtt.Client(
            broker.host, broker.port, username=SITE, password=PASSWORDS[SITE], identifier=SITE,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:  # fmt: skip
            for topic, payload in corpus:
                await client.publish(topic, payload, qos=1)
        await publish(broker, telemetry_topic(SITE, machine), good[5:])
        assert await wait_for_count(pipeline_engine, 60) == 60
        for _ in range(100):
            async with session_factory(pipeline_engine)() as session:
                letters = int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)
            if letters >= len(corpus):
                break
            await asyncio.sleep(0.1)
        assert ingestor.subscribed.is_set()
    async with session_factory(pipeline_engine)() as session:
        stored = (await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all()
    assert len(stored) == len(corpus)
    # Payloads are kept up to DEAD_LETTER_MAX_PAYLOAD_BYTES (4096), with the original size beside them.
    assert {(letter.topic, letter.payload, letter.payload_size) for letter in stored} == {
        (topic, payload[:4096], len(payload)) for topic, payload in corpus
    }
    assert all(letter.reason for letter in stored)
    reasons = {letter.payload: letter.reason for letter in stored}
    assert reasons[b"not json at all"].startswith("not JSON")
    assert "timezone" in reasons[b'{"ts": "2026-11-26T08:00:00", "values": {"a": 1}}']
    assert "outside the accepted window" in reasons[b'{"ts": "1999-01-01T00:00:00Z", "values": {"a": 1}}']


async def test_machine_status_follows_the_retained_status_topic(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine = unique("st")
    async with running_ingestor(broker, ingest_database, pipeline_engine):
        # Telemetry registers the machine; statuses only update machines that exist.
        await publish(broker, telemetry_topic(SITE, machine), stream_payloads(machine, messages=1, samples=1, tags=1))
        assert await wait_for_count(pipeline_engine, 1) == 1
        async with aiomqtt.Client(
            broker.host, broker.port, username=SITE, password=PASSWORDS[SITE], identifier=SITE,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:  # fmt: skip
            ts = datetime.now(UTC).isoformat()
            await client.publish(status_topic(SITE, machine), f'{{"online": false, "ts": "{ts}"}}', qos=1, retain=True)
            await client.publish(status_topic(SITE, machine), b"", qos=1, retain=True)  # clear the retained copy
        online = None
        for _ in range(100):
            async with session_factory(pipeline_engine)() as session:
                online = await session.scalar(select(Machine.online).where(Machine.code == machine))
            if online is not None:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let the clearing message through too
    assert online is False
    async with session_factory(pipeline_engine)() as session:
        assert await session.scalar(select(func.count()).select_from(DeadLetter)) == 0


async def test_unacknowledged_messages_are_redelivered_to_the_same_client_id(broker: MosquittoBroker) -> None:
    """The one property the manual-ack module exists for: what was not acked comes back; what was acked does not."""
    client_id, topic = unique("acker"), telemetry_topic(SITE, unique("ack"))

    def subscriber() -> aiomqtt.Client:
        client = aiomqtt.Client(
            broker.host, broker.port, username="ingestor", password=PASSWORDS["ingestor"], identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V311, clean_session=False,
        )  # fmt: skip
        enable_manual_ack(client)
        return client

    async with subscriber() as client:
        await client.subscribe(topic, qos=1)
    await publish(broker, topic, [b"first", b"second"])

    received: list[bytes] = []
    async with subscriber() as client:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            received.append(message.payload)
            if message.payload == b"first":
                ack(client, message)
            if len(received) == 2:
                break
        # Leave without acknowledging "second".
    assert received == [b"first", b"second"]
    async with subscriber() as client:
        message = await asyncio.wait_for(anext(aiter(client.messages)), timeout=10)
        assert message.payload == b"second"
        ack(client, message)
    async with subscriber() as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(client.messages)), timeout=1.5)


async def test_sigkill_at_random_points_then_restart_stores_every_reading_exactly_once(
    broker: MosquittoBroker,
    ingest_database: str,
    pipeline_engine: AsyncEngine,
    ingestor_process: list[IngestorProcess],
    tmp_path: Path,
) -> None:
    """Killed three times at random moments of the pipeline (a batch being decoded, written, committed or
    acknowledged while the next one is built): a message acknowledged before its commit would be missing at the
    end. Over TLS, as compose runs it (every other test here exercises the plain transport)."""
    machine, identity = unique("crash"), Identity()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    tls = {"MQTT_PORT": str(broker.tls_port), "MQTT_TLS": "true", "MQTT_CA_FILE": str(broker.certs / "ca.crt")}
    env = ingestor_env(
        broker, ingest_database, identity, INGEST_BATCH_MIN_READINGS="500", INGEST_BATCH_MAX_READINGS="2000", **tls
    )
    process = IngestorProcess(env, tmp_path / "ingestor-0.log")
    ingestor_process.append(process)
    process.start()
    process.wait_subscribed()
    payloads = stream_payloads(machine, messages=1000, samples=10, tags=10)  # 100,000 readings
    publishing = asyncio.create_task(
        publish(broker, telemetry_topic(SITE, machine), payloads, pause_every=50, pause_s=0.05), name="test:publisher"
    )
    killed_at = []
    for number, threshold in enumerate(sorted(rng.sample(range(5_000, 60_000, 500), 3)), start=1):
        assert await wait_for_count(pipeline_engine, threshold, within_s=60) >= threshold, f"seed {seed}"
        await asyncio.sleep(rng.uniform(0, 0.2))
        process.signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        killed_at.append(await reading_count(pipeline_engine))
        process = IngestorProcess(env, tmp_path / f"ingestor-{number}.log")
        ingestor_process.append(process)
        process.start()
    await publishing
    assert killed_at[0] < 100_000, f"seed {seed}"
    assert await wait_for_count(pipeline_engine, 100_000, within_s=90) == 100_000, f"seed {seed}, killed at {killed_at}"
    await asyncio.sleep(1.0)
    assert await reading_count(pipeline_engine) == 100_000
    async with session_factory(pipeline_engine)() as session:
        rows = await session.execute(select(func.min(Reading.value), func.max(Reading.value), func.sum(Reading.value)))
        low, high, total = rows.one()
    # Every value 1000*i + 10*s + t (i < 1000, s < 10, t < 10) exactly once.
    assert (low, high) == (0.0, 999_099.0)
    assert total == sum(1000 * i + 10 * s + t for i in range(1000) for s in range(10) for t in range(10))


async def test_no_message_is_acknowledged_before_the_commit_that_holds_it(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipelined ingestor's ordering rule, checked at every acknowledgement: while batch N commits, batch N+1
    is being built, and its messages must wait for their own commit."""
    machine = unique("order")
    committed: set[int] = set()
    acked: list[int] = []
    early: list[int] = []
    store = Ingestor._store

    async def recording_store(self: Ingestor, batch: IngestBatch, *, mode: str) -> WriteResult:
        result = await store(self, batch, mode=mode)
        committed.update(message.seq for message in batch.telemetry if message.seq is not None)
        return result

    def recording_ack(client: aiomqtt.Client, message: aiomqtt.Message) -> bool:
        if str(message.topic) == telemetry_topic(SITE, machine):
            assert isinstance(message.payload, bytes)
            seq = orjson.loads(message.payload)["seq"]
            acked.append(seq)
            if seq not in committed:
                early.append(seq)
        return ack(client, message)

    monkeypatch.setattr(Ingestor, "_store", recording_store)
    monkeypatch.setattr(ingestor.service, "ack", recording_ack)
    payloads = stream_payloads(machine, messages=400, samples=5, tags=10)  # 20,000 readings
    async with running_ingestor(
        broker, ingest_database, pipeline_engine, ingest_batch_min_readings=200, ingest_batch_max_readings=1000
    ) as running:
        await publish(broker, telemetry_topic(SITE, machine), payloads)
        assert await wait_for_count(pipeline_engine, 20_000) == 20_000
        transactions = running.metrics.transactions.labels("batch")._value.get()
    assert early == []
    assert sorted(acked) == list(range(400))
    assert transactions >= 20  # at most 1,000 readings each: the pipeline really ran many batches


async def test_database_restart_mid_stream_loses_nothing(
    broker: MosquittoBroker,
    ingest_database: str,
    pipeline_engine: AsyncEngine,
    postgres_server: PostgresServer,
    ingestor_process: list[IngestorProcess],
    tmp_path: Path,
) -> None:
    machine, identity = unique("dbdown"), Identity()
    process = IngestorProcess(ingestor_env(broker, ingest_database, identity), tmp_path / "ingestor.log")
    ingestor_process.append(process)
    process.start()
    process.wait_subscribed()
    payloads = stream_payloads(machine, messages=300, samples=10, tags=5)  # 15,000 readings
    publishing = asyncio.create_task(
        publish(broker, telemetry_topic(SITE, machine), payloads, pause_every=20, pause_s=0.1), name="test:publisher"
    )
    assert await wait_for_count(pipeline_engine, 2_000, within_s=60) >= 2_000
    await pipeline_engine.dispose()
    await asyncio.to_thread(postgres_server.stop)
    await asyncio.sleep(2.0)  # the ingestor keeps receiving, fails to write, and retries
    await asyncio.to_thread(postgres_server.start)
    await publishing
    assert await wait_for_count(pipeline_engine, 15_000, within_s=90) == 15_000
    assert process.process is not None
    assert process.process.poll() is None, "the ingestor must survive the outage"
    assert "retrying" in process.log_path.read_text()


def network_address() -> str:
    """This host's address on its default route (a UDP "connection" sends nothing); never a loopback one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))
        address: str = probe.getsockname()[0]
    assert not address.startswith("127."), "this host has no network address to check the metrics binding with"
    return address


async def test_sigterm_drains_commits_and_exits_zero(
    broker: MosquittoBroker,
    ingest_database: str,
    pipeline_engine: AsyncEngine,
    ingestor_process: list[IngestorProcess],
    tmp_path: Path,
) -> None:
    machine, identity = unique("term"), Identity()
    metrics_port = free_port()
    # A long batch age: without draining, the last batch would still be waiting when SIGTERM arrives.
    env = ingestor_env(
        broker,
        ingest_database,
        identity,
        INGEST_BATCH_MAX_AGE_MS="5000",
        INGEST_BATCH_MAX_READINGS="100000",
        INGEST_METRICS_PORT=str(metrics_port),
    )
    process = IngestorProcess(env, tmp_path / "ingestor.log")
    ingestor_process.append(process)
    process.start()
    process.wait_subscribed()
    await publish(broker, telemetry_topic(SITE, machine), stream_payloads(machine, messages=50, samples=2, tags=5))
    await asyncio.sleep(0.5)
    assert await reading_count(pipeline_engine) == 0
    async with httpx.AsyncClient() as http:
        scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    samples = {
        (sample.name, sample.labels.get("kind")): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    assert samples[("shopfloor_ingest_messages_received_total", "Telemetry")] == 50
    # Held until the batch ages out: the telemetry, plus any retained (machine and gateway) statuses earlier tests
    # left on the broker.
    stored_kinds = ("Telemetry", "StatusUpdate", "GatewayStatus", "RejectedMessage")
    held = sum(samples.get(("shopfloor_ingest_messages_received_total", kind), 0) for kind in stored_kinds)
    assert samples[("shopfloor_ingest_uncommitted_messages", None)] == held
    # Metrics listen on loopback by default: the same port on the host's network address is closed.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((network_address(), metrics_port), timeout=2).close()
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert await reading_count(pipeline_engine) == 500
    log = process.log_path.read_text()
    assert "ingestor_drained" in log
    # Everything was acknowledged: resuming the session under the same id yields nothing to redeliver.
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    properties.SessionExpiryInterval = 3600
    async with aiomqtt.Client(
        broker.host, broker.port, username="ingestor", password=PASSWORDS["ingestor"], identifier=identity.client_id,
        protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=properties,
    ) as resumed:  # fmt: skip
        enable_manual_ack(resumed)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(resumed.messages)), timeout=1.5)


async def test_two_ingestors_in_one_group_split_the_stream(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machines = [unique("split") for _ in range(4)]
    group = fresh_group()
    first = Identity(group=group)
    second = Identity(group=group)
    async with (
        running_ingestor(broker, ingest_database, pipeline_engine, first) as one,
        running_ingestor(broker, ingest_database, pipeline_engine, second) as two,
    ):
        for machine in machines:
            await publish(
                broker, telemetry_topic(SITE, machine), stream_payloads(machine, messages=25, samples=2, tags=2)
            )
        assert await wait_for_count(pipeline_engine, 4 * 25 * 4) == 400
        received_one = one.metrics.received.labels("Telemetry")._value.get()
        received_two = two.metrics.received.labels("Telemetry")._value.get()
        gaps = one.metrics.seq_gaps._value.get() + two.metrics.seq_gaps._value.get()
    assert received_one + received_two == 100
    assert received_one > 0
    assert received_two > 0
    # Each saw only part of every machine's 0..24, and yet no number is missing: none counted as a gap.
    assert gaps == 0
    assert await seq_records(pipeline_engine, machines) == dict.fromkeys(machines, (24, 0))


async def seq_records(engine: AsyncEngine, machines: list[str]) -> dict[str, tuple[int | None, int]]:
    """Per machine: the number below which its `seq` is accounted for, and the gaps counted."""
    async with session_factory(engine)() as session:
        rows = await session.execute(
            select(Machine.code, TelemetrySeq.contiguous, TelemetrySeq.missing_total)
            .join(TelemetrySeq, TelemetrySeq.machine_id == Machine.id)
            .where(Machine.code.in_(machines))
        )
        return {code: (contiguous, missing) for code, contiguous, missing in rows}


async def test_a_real_gap_is_counted_once_by_a_group_of_two_ingestors(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    """Message 10 never comes: counted once, by whichever ingestor commits after the reorder window (1 s)."""
    machine, group = unique("gap"), fresh_group()
    topic = telemetry_topic(SITE, machine)
    async with (
        running_ingestor(
            broker, ingest_database, pipeline_engine, Identity(group=group), ingest_seq_reorder_s=1
        ) as one,
        running_ingestor(
            broker, ingest_database, pipeline_engine, Identity(group=group), ingest_seq_reorder_s=1
        ) as two,
    ):
        await publish(broker, topic, stream_payloads(machine, messages=10, samples=1, tags=2))
        await publish(broker, topic, stream_payloads(machine, messages=10, samples=1, tags=2, offset=11))
        assert await wait_for_count(pipeline_engine, 40) == 40
        await asyncio.sleep(1.5)
        await publish(broker, topic, stream_payloads(machine, messages=5, samples=1, tags=2, offset=21))
        assert await wait_for_count(pipeline_engine, 50) == 50
        gaps = one.metrics.seq_gaps._value.get() + two.metrics.seq_gaps._value.get()
    assert gaps == 1
    assert await seq_records(pipeline_engine, [machine]) == {machine: (25, 1)}


async def test_a_group_the_brokers_rules_do_not_allow_stops_the_ingestor_with_one_line(
    broker: MosquittoBroker,
    ingest_database: str,
    ingestor_process: list[IngestorProcess],
    tmp_path: Path,
) -> None:
    """A refused SUBSCRIBE must not look like a quiet plant: the ingestor would receive nothing, for ever."""
    process = IngestorProcess(
        ingestor_env(broker, ingest_database, Identity(group="not-in-the-rules")), tmp_path / "ingestor.log"
    )
    ingestor_process.append(process)
    process.start()
    assert process.process is not None
    assert await asyncio.to_thread(process.process.wait, 30) == 2
    log = (tmp_path / "ingestor.log").read_text()
    assert "configuration error: the broker refused the subscription to $share/not-in-the-rules/" in log
    assert "Traceback" not in log
    assert process.ready_file.exists() is False
