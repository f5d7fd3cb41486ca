"""A device login attacking the ingestor (issue 13), against real Mosquitto, the real ingestor and PostgreSQL:
poison messages, junk floods, dead-letter floods, machine-registration floods, retained ghost statuses."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiomqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncEngine

import core.ingest
import ingestor.service
from core.contract import status_topic, telemetry_topic
from core.db import session_factory
from core.models import DeadLetter, Machine
from ingestor.service import Ingestor
from tests.support.mosquitto import MosquittoBroker
from tests.support.pipeline import (
    PASSWORDS,
    SITE,
    Identity,
    reading_count,
    running_ingestor,
    stream_payloads,
    unique,
    wait_for_count,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres]

# Valid JSON whose tag is a NUL with a value no tag may have (a list): decoding rejects it, and the reason names
# the tag raw (the schema's location), so only escaping keeps the NUL out of the database.
POISON = b'{"ts": "2026-11-26T08:00:00Z", "values": {"\\u0000": [1]}}'


async def publish_many(broker: MosquittoBroker, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    """Publish at QoS 1 with the site's login, waiting for every PUBACK."""
    async with aiomqtt.Client(
        broker.host, broker.port, username=SITE, password=PASSWORDS[SITE], identifier=SITE,
        protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=200,
    ) as client:  # fmt: skip
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


async def dead_letters(engine: AsyncEngine) -> list[DeadLetter]:
    async with session_factory(engine)() as session:
        return list((await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all())


async def count_of(engine: AsyncEngine, entity: type) -> int:
    async with session_factory(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(entity)) or 0)


async def until(condition: Callable[[], Awaitable[bool]], within_s: float = 60) -> None:
    """Poll `condition` until it holds or time runs out (the assertions that follow say what was missing)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)


def counter(ingestor: Ingestor, name: str, *labels: str) -> float:
    metric = getattr(ingestor.metrics, name)
    return float((metric.labels(*labels) if labels else metric)._value.get())


def poisoned_stream(machine: str, messages: int, every: int) -> list[tuple[str, bytes]]:
    good = stream_payloads(machine, messages=messages, samples=1, tags=2)
    topic = telemetry_topic(SITE, machine)
    return [(topic, POISON if index % every == every - 1 else payload) for index, payload in enumerate(good)]


async def test_poison_every_50th_message_leaves_the_good_ones_in_batches(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine = unique("poison")
    stream = poisoned_stream(machine, 3000, every=50)
    async with running_ingestor(
        broker, ingest_database, pipeline_engine, dead_letter_max_per_topic_per_min=1000
    ) as ingestor:
        await publish_many(broker, stream)
        assert await wait_for_count(pipeline_engine, 2940 * 2) == 2940 * 2
        await until(lambda: _has(pipeline_engine, DeadLetter, 60))
        batches, singles = counter(ingestor, "transactions", "batch"), counter(ingestor, "transactions", "single")
    # Before: every batch holding a poison message was refused and replayed one message per transaction.
    assert singles == 0
    assert 1 <= batches <= 300, batches  # 3,000 messages: at least 10 per transaction on average
    letters = await dead_letters(pipeline_engine)
    assert len(letters) == 60
    assert all("\x00" not in letter.reason and "\\u0000" in letter.reason for letter in letters)
    assert {letter.payload for letter in letters} == {POISON}
    assert await reading_count(pipeline_engine) == 2940 * 2


async def test_a_dead_letter_the_database_refuses_does_not_send_the_good_messages_one_by_one(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback itself: with escaping switched off the raw NUL reaches PostgreSQL again, as before the fix."""
    monkeypatch.setattr(core.ingest, "plain_text", lambda value, limit: value[:limit])
    machine = unique("refused")
    stream = poisoned_stream(machine, 1000, every=50)
    async with running_ingestor(
        broker, ingest_database, pipeline_engine, dead_letter_max_per_topic_per_min=1000
    ) as ingestor:
        await publish_many(broker, stream)
        assert await wait_for_count(pipeline_engine, 980 * 2) == 980 * 2
        await until(lambda: _has(pipeline_engine, DeadLetter, 20))
        singles = counter(ingestor, "transactions", "single")
    # Only the poison messages went one by one (each as its "database refused" dead letter); no good one did.
    assert singles == 20
    letters = await dead_letters(pipeline_engine)
    assert len(letters) == 20
    assert all(letter.reason.startswith("database refused: ") for letter in letters)
    assert {letter.payload for letter in letters} == {POISON}


async def test_a_message_that_cannot_be_stored_even_as_a_dead_letter_is_acknowledged_not_retried(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = Identity()
    machine = unique("unstorable")
    stream = poisoned_stream(machine, 200, every=50)
    with monkeypatch.context() as patch:
        patch.setattr(core.ingest, "plain_text", lambda value, limit: value[:limit] + "\x00")  # every letter refused
        async with running_ingestor(broker, ingest_database, pipeline_engine, identity) as ingestor:
            await publish_many(broker, stream)
            assert await wait_for_count(pipeline_engine, 196 * 2) == 196 * 2
            await until(lambda: _value_reached(ingestor, 4))
            dropped = counter(ingestor, "dead_letters_dropped", "unstorable")
            assert ingestor.subscribed.is_set()
    assert dropped == 4
    assert await count_of(pipeline_engine, DeadLetter) == 0
    # Acknowledged: the same session comes back and the broker has nothing left to redeliver.
    async with running_ingestor(broker, ingest_database, pipeline_engine, identity) as again:
        await asyncio.sleep(1.5)
        families = again.metrics.received.collect()
        # Telemetry only: retained statuses that other tests left on the broker come to every new subscription; a
        # redelivered poison message would be stored as a dead letter now (checked below).
        received = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("kind") == "Telemetry"
        )
    assert received == 0
    assert await count_of(pipeline_engine, DeadLetter) == 0


async def test_large_junk_is_kept_truncated_with_its_size_and_hash(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    junk = [bytes([number]) * 200_000 + b"{" for number in range(40)]
    topic = telemetry_topic(SITE, unique("junk"))
    async with running_ingestor(broker, ingest_database, pipeline_engine):
        await publish_many(broker, [(topic, payload) for payload in junk])
        await until(lambda: _has(pipeline_engine, DeadLetter, 40))
    letters = await dead_letters(pipeline_engine)
    assert len(letters) == 40
    assert all(len(letter.payload) == 4096 for letter in letters)
    assert sorted((letter.payload_size, letter.payload_sha256, letter.payload) for letter in letters) == sorted(
        (len(payload), hashlib.sha256(payload).hexdigest(), payload[:4096]) for payload in junk
    )
    async with session_factory(pipeline_engine)() as session:
        stored = await session.scalar(select(func.sum(func.length(DeadLetter.payload))))
    assert stored == 40 * 4096  # was 8 MB of payloads


async def test_dead_letters_beyond_the_per_topic_limit_are_dropped_and_counted(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    if time.monotonic() % 60 > 45:  # the limit's window is a clock minute: start this test inside a fresh one
        await asyncio.sleep(61 - time.monotonic() % 60)
    noisy, quiet = telemetry_topic(SITE, unique("noisy")), telemetry_topic(SITE, unique("quiet"))
    messages = [(noisy, b"junk %d" % number) for number in range(100)] + [(quiet, b"junk")] * 5
    async with running_ingestor(
        broker, ingest_database, pipeline_engine, dead_letter_max_per_topic_per_min=10
    ) as ingestor:
        await publish_many(broker, messages)
        await until(lambda: _has(pipeline_engine, DeadLetter, 15))
        await asyncio.sleep(0.5)
        dropped = counter(ingestor, "dead_letters_dropped", "rate_limit")
        uncommitted = counter(ingestor, "uncommitted")
    letters = await dead_letters(pipeline_engine)
    assert sorted(letter.topic for letter in letters) == sorted([noisy] * 10 + [quiet] * 5)
    assert [letter.payload for letter in letters if letter.topic == noisy] == [b"junk %d" % n for n in range(10)]
    assert (dropped, uncommitted) == (90, 0)


async def test_messages_the_database_refuses_are_dead_lettered_within_the_per_topic_limit(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telemetry that decodes but that the database refuses (a value a column cannot take, a constraint) is
    dead-lettered one message at a time; the per-topic limit applies there too, and the rest is counted."""
    if time.monotonic() % 60 > 45:  # the limit's window is a clock minute: start this test inside a fresh one
        await asyncio.sleep(61 - time.monotonic() % 60)
    refused, fine = unique("dbrefused"), unique("dbfine")
    write_batch = core.ingest.write_batch

    async def refusing(conn: object, batch: core.ingest.IngestBatch, **options: object) -> core.ingest.WriteResult:
        if any(message.machine == refused for message in batch.telemetry):
            raise DataError("INSERT INTO reading", {}, ValueError("value out of range"))
        return await write_batch(conn, batch, **options)  # type: ignore[arg-type] # the real function's arguments

    monkeypatch.setattr(ingestor.service, "write_batch", refusing)
    messages = [(telemetry_topic(SITE, refused), payload) for payload in stream_payloads(refused, 30, 1, 1)]
    messages += [(telemetry_topic(SITE, fine), payload) for payload in stream_payloads(fine, 10, 1, 1)]
    async with running_ingestor(
        broker, ingest_database, pipeline_engine, dead_letter_max_per_topic_per_min=10
    ) as running:
        await publish_many(broker, messages)
        assert await wait_for_count(pipeline_engine, 10) == 10
        await until(lambda: _value_reached(running, 20, "rate_limit"))
        dropped = counter(running, "dead_letters_dropped", "rate_limit")
    letters = await dead_letters(pipeline_engine)
    assert len(letters) == 10
    assert all(letter.reason.startswith("database refused: ") for letter in letters)
    assert dropped == 20


async def test_a_flood_of_new_machine_topics_registers_at_most_the_cap(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    prefix = unique("flood")
    now = datetime.now(UTC).isoformat()
    payload = f'{{"ts": "{now}", "values": {{"temp": 1.5}}}}'.encode()
    # Finding 4's attack: 10,000 new machine topics from one login (the dead-letter limit per topic does not
    # help here, every topic is new).
    flood = [(telemetry_topic(SITE, f"{prefix}-{number}"), payload) for number in range(10_000)]
    async with running_ingestor(
        broker, ingest_database, pipeline_engine, ingest_auto_register_max_per_site_per_hour=50
    ):
        await publish_many(broker, flood)
        await until(lambda: _has(pipeline_engine, DeadLetter, 9950), within_s=120)
    assert await count_of(pipeline_engine, Machine) == 50
    assert await reading_count(pipeline_engine) == 50
    letters = await dead_letters(pipeline_engine)
    assert len(letters) == 9950
    assert all("INGEST_AUTO_REGISTER_MAX_PER_SITE_PER_HOUR" in letter.reason for letter in letters)


async def test_retained_statuses_of_unknown_machines_create_nothing(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    prefix = unique("ghost")
    topics = [status_topic(SITE, f"{prefix}-{number}") for number in range(200)]
    await publish_many(broker, [(topic, b'{"online": true}') for topic in topics], retain=True)
    try:
        # A fresh ingestor subscribes and the broker replays every retained status to it.
        async with running_ingestor(broker, ingest_database, pipeline_engine) as ingestor:
            await until(lambda: _value_reached(ingestor, 200, "statuses_ignored"))
            ignored = counter(ingestor, "statuses_ignored")
    finally:
        await publish_many(broker, [(topic, b"") for topic in topics], retain=True)
    assert ignored >= 200  # retained statuses other tests left behind count too
    assert await count_of(pipeline_engine, Machine) == 0
    assert await count_of(pipeline_engine, DeadLetter) == 0


async def _has(engine: AsyncEngine, entity: type, rows: int) -> bool:
    return await count_of(engine, entity) >= rows


async def _value_reached(ingestor: Ingestor, value: float, name: str = "dead_letters_dropped") -> bool:
    if name in ("dead_letters_dropped", "rate_limit"):  # the dropped counter by its reason
        return (
            counter(ingestor, "dead_letters_dropped", "rate_limit" if name == "rate_limit" else "unstorable") >= value
        )
    return counter(ingestor, name) >= value
