"""Sparkplug B end to end with an implementation nobody here wrote: an edge node on Eclipse Tahu's JavaScript client
(npm sparkplug-client) -> the real Mosquitto (the edge node's own login) -> the ingestor as host application ->
PostgreSQL. Births, data by alias, a forced seq gap answered by a Rebirth request, deaths; every value stored once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.contract import QualityLevel
from core.db import session_factory
from core.models import DeadLetter, Machine, MachineStateChange, Reading
from core.settings import SparkplugSettings
from core.sparkplug import default_tag, ncmd_topic, state_topic
from core.sparkplug_b_pb2 import Payload
from tests.support.mosquitto import MosquittoBroker
from tests.support.pipeline import EDGE, PASSWORDS, SITE, running_ingestor
from tests.support.sparkplug import Published, tahu_edge_node

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.sparkplug]

DEVICE = "Press-1"
HOST_ID = "shopfloor"
MESSAGES = 12
# One metric mapped by SPARKPLUG_TAGS; the others get the default tag names.
TAGS = {"Barrel/Temperature": "barrel_temp_c"}
NOT_STORED = {"bdSeq", "Node Control/Rebirth", "Recipe", "state"}  # control, a text not mapped to state, the state
EDGE_TIMEOUT_S = 90.0


SPARKPLUG = SparkplugSettings(
    sparkplug_enabled=True, sparkplug_host_id=HOST_ID, sparkplug_groups=[SITE], sparkplug_tags=TAGS
)


def expected_values(published: list[Published], gap_index: int) -> set[tuple[str, str, datetime, float | None]]:
    """(machine, tag, ts, value) of every numeric value published, but the DDATA after the forced gap."""
    names: dict[int, str] = {}
    values: set[tuple[str, str, datetime, float | None]] = set()
    for index, message in enumerate(published):
        if index == gap_index:
            continue
        machine = (message.device or EDGE).lower()
        for metric in message.metrics:
            if metric["name"] is not None and metric["alias"] is not None:
                names[metric["alias"]] = metric["name"]
            name = metric["name"] or names[metric["alias"]]
            if name in NOT_STORED:
                continue
            value = metric["value"]
            number = None if value is None else float(value)
            when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=metric["ts"])
            values.add((machine, TAGS.get(name, default_tag(name)), when, number))
    return values


async def stored(engine: AsyncEngine) -> list[tuple[str, str, datetime, float | None, int | None]]:
    async with session_factory(engine)() as session:
        rows = await session.execute(
            select(Machine.code, Reading.tag, Reading.ts, Reading.value, Reading.quality).join(
                Machine, Machine.id == Reading.machine_id
            )
        )
        return [(code, tag, ts.astimezone(UTC), value, quality) for code, tag, ts, value, quality in rows]


async def wait_until(condition: Any, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def test_tahu_edge_node_births_data_gap_rebirth_and_deaths_end_to_end(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    requests: list[Payload] = []
    states: list[dict[str, Any]] = []

    async def watch(watcher: aiomqtt.Client) -> None:
        async for message in watcher.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if str(message.topic) == state_topic(HOST_ID):
                states.append(orjson.loads(payload))
            else:
                request = Payload()
                request.ParseFromString(payload)
                requests.append(request)

    async with (
        running_ingestor(broker, ingest_database, pipeline_engine, sparkplug=SPARKPLUG),
        aiomqtt.Client(
            broker.host, broker.port, username="ingestor", password=PASSWORDS["ingestor"],
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as watcher,
    ):  # fmt: skip
        await watcher.subscribe(ncmd_topic(SITE, EDGE), qos=1)
        await watcher.subscribe(state_topic(HOST_ID), qos=1)
        watching = asyncio.create_task(watch(watcher), name="test:sparkplug-watch")
        url = f"mqtt://{broker.host}:{broker.port}"
        async with tahu_edge_node(
            url, login=EDGE, password=PASSWORDS[EDGE], group=SITE, device=DEVICE, messages=MESSAGES
        ) as (process, run):
            try:
                await asyncio.wait_for(process.wait(), timeout=EDGE_TIMEOUT_S)
            except TimeoutError:
                pytest.fail(f"the Tahu edge node did not finish: {run.lines[-20:]}")
        assert process.returncode == 0, (run.stderr, run.lines[-20:])
        assert run.rebirths == 1
        published = run.published
        # The message published right before the Rebirth request arrived is the one after the skipped seq number.
        gap_index = sum(1 for line in run.lines[: run.lines.index("REBIRTH")] if line.startswith("PUBLISHED ")) - 1
        assert published[gap_index].kind == "DDATA"
        expected = expected_values(published, gap_index)

        async def all_in() -> bool:
            return len(await stored(pipeline_engine)) >= len(expected)

        async def both_offline() -> bool:
            async with session_factory(pipeline_engine)() as session:
                online = await session.scalars(select(Machine.online).where(Machine.code.in_([EDGE, "press-1"])))
                return list(online) == [False, False]

        await wait_until(all_in)
        await wait_until(both_offline)
        watching.cancel()
    rows = await stored(pipeline_engine)
    # Exactly once: the same set, and no (machine, tag, ts) twice.
    assert {row[:4] for row in rows} == expected
    assert len(rows) == len(expected)
    qualities = {(row[1], row[4]) for row in rows if row[4] is not None}
    assert qualities == {("pressure", int(QualityLevel.UNCERTAIN)), ("sensor", int(QualityLevel.BAD))}
    assert any(tag == "offset" and value is not None and value < 0 for _, tag, _, value, _ in rows)

    async with session_factory(pipeline_engine)() as session:
        letters = (await session.scalars(select(DeadLetter))).all()
        machines = {m.code: m for m in (await session.scalars(select(Machine).where(Machine.site == SITE))).all()}
        state_rows = (await session.scalars(select(MachineStateChange.state))).all()
    # The DDATA after the gap is kept, nothing else; the host asked for the births once and got them.
    assert [(letter.source, letter.topic) for letter in letters] == [
        ("sparkplug", f"spBv1.0/{SITE}/DDATA/{EDGE}/{DEVICE}")
    ]
    assert "seq gap" in letters[0].reason
    assert machines[EDGE].online is False
    assert machines["press-1"].online is False
    assert list(state_rows) == ["running"]
    assert [[(m.name, m.boolean_value) for m in request.metrics] for request in requests] == [
        [("Node Control/Rebirth", True)]
    ]
    # The host's STATE: online while connected, offline with the same timestamp once it stopped (retained).
    assert [state["online"] for state in states] == [True]
    async with aiomqtt.Client(
        broker.host, broker.port, username="ingestor", password=PASSWORDS["ingestor"],
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as reader:  # fmt: skip
        await reader.subscribe(state_topic(HOST_ID), qos=1)
        async with asyncio.timeout(5):
            async for message in reader.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                assert orjson.loads(message.payload) == {"online": False, "timestamp": states[0]["timestamp"]}
                break


async def test_data_before_a_birth_is_kept_and_asks_for_one_and_the_host_defends_its_state(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    v5 = aiomqtt.ProtocolVersion.V5
    orphan = Payload(timestamp=int(time.time() * 1000), seq=7)
    orphan.metrics.add(alias=1, double_value=1.5)
    async with (
        running_ingestor(broker, ingest_database, pipeline_engine, sparkplug=SPARKPLUG),
        aiomqtt.Client(
            broker.host, broker.port, protocol=v5, username="ingestor", password=PASSWORDS["ingestor"]
        ) as watcher,
        aiomqtt.Client(
            broker.host, broker.port, protocol=v5, username=EDGE, password=PASSWORDS[EDGE], identifier=EDGE
        ) as edge,
    ):
        await watcher.subscribe(ncmd_topic(SITE, EDGE), qos=1)
        await watcher.subscribe(state_topic(HOST_ID), qos=1)
        await edge.publish(f"spBv1.0/{SITE}/NDATA/{EDGE}", orphan.SerializeToString(), qos=1)
        await edge.publish(f"spBv1.0/{SITE}/NDATA/{EDGE}", b"\xff\xff not protobuf", qos=1)
        # Someone (here: another ingestor's login) says the host is offline: it says online again.
        await watcher.publish(state_topic(HOST_ID), b'{"online": false, "timestamp": 1}', qos=1, retain=True)
        seen: list[tuple[str, bytes]] = []
        async with asyncio.timeout(10):
            async for message in watcher.messages:
                seen.append((str(message.topic), message.payload if isinstance(message.payload, bytes) else b""))
                states = [orjson.loads(payload)["online"] for topic, payload in seen if topic == state_topic(HOST_ID)]
                if states[-2:] == [False, True] and any(topic == ncmd_topic(SITE, EDGE) for topic, _ in seen):
                    break

        async def letters() -> list[DeadLetter]:
            async with session_factory(pipeline_engine)() as session:
                return list((await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all())

        async def both_kept() -> bool:
            return len(await letters()) == 2

        await wait_until(both_kept)
    kept = await letters()
    assert [letter.reason for letter in kept] == [
        "no NBIRTH known for this edge node; rebirth requested",
        # Within SPARKPLUG_REBIRTH_INTERVAL_S of the first request: kept, not asked again.
        f"{kept[1].reason.split(';')[0]}; rebirth already requested",
    ]
    assert kept[1].reason.startswith("not a Sparkplug B payload")
    assert [topic for topic, _ in seen].count(ncmd_topic(SITE, EDGE)) == 1
    assert await stored(pipeline_engine) == []
