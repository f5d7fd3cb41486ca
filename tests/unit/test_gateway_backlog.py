"""The gateway's backlog: the buffer's figures, the time until its bound drops, and live-first paced replay."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path
from typing import cast

import orjson

from core.contract import StatusPayload, encode_status
from core.puback import PubackTracker
from gateway.backlog import BacklogMeter
from gateway.buffer import BufferStats, DiskBuffer, OutgoingMessage
from gateway.config import parse_config
from gateway.service import Gateway

TOPIC = "shopfloor/v1/plant1/press-3/telemetry"


def open_buffer(path: Path, *, max_bytes: int = 1024**3) -> DiskBuffer:
    return DiskBuffer(path, max_messages=1_000_000, max_bytes=max_bytes, max_age_s=3600.0)


def test_the_buffer_counts_messages_readings_bytes_and_the_oldest_across_reopen(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db") as buffer:
        empty = buffer.stats()
        assert (empty.messages, empty.readings, empty.bytes, empty.oldest_created_at, empty.last_id) == (
            0,
            0,
            0,
            None,
            0,
        )
        assert empty.oldest_age_s(5000.0) == 0.0
        buffer.append_many(
            [OutgoingMessage(TOPIC, b"a" * 10, readings=7), OutgoingMessage(TOPIC, b"b", readings=3)], now=1000.0
        )
        third = buffer.append(TOPIC, b"c", readings=5, now=1010.0)
        stats = buffer.stats()
        assert (stats.messages, stats.readings, stats.oldest_created_at, stats.last_id) == (3, 15, 1000.0, third.id)
        assert stats.bytes == 3 * len(TOPIC) + 12
        assert stats.oldest_age_s(1060.0) == 60.0
        assert stats.oldest_age_s(900.0) == 0.0  # a clock that stepped back never gives a negative age
        buffer.delete([m.id for m in buffer.peek(2)])
    with open_buffer(tmp_path / "buffer.db") as buffer:
        stats = buffer.stats()
        assert (stats.messages, stats.readings, stats.oldest_created_at, stats.last_id) == (1, 5, 1010.0, third.id)
        buffer.delete([third.id])
        # Emptied, the last id stays: a message appended later is still known to be newer.
        assert (buffer.stats().messages, buffer.stats().readings, buffer.stats().last_id) == (0, 0, third.id)


def test_dropped_messages_leave_the_reading_count_too(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_bytes=len(TOPIC) * 2 + 2) as buffer:
        for index in range(5):
            buffer.append(TOPIC, b"x", readings=10 + index, now=1000.0 + index)
        stats = buffer.stats()
    assert (stats.messages, stats.readings) == (2, 13 + 14)


def test_a_schema_1_file_is_upgraded_in_place_keeping_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the layout schema 1 wrote, with one queued message
        db.executescript(
            """
            CREATE TABLE message (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, qos INTEGER NOT NULL,
                retain INTEGER NOT NULL, created_at REAL NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
            INSERT INTO meta VALUES ('messages', 0), ('bytes', 0), ('dropped_overflow', 0), ('dropped_expired', 0);
            CREATE TRIGGER message_counted_in AFTER INSERT ON message BEGIN
                UPDATE meta SET value = value + 1 WHERE key = 'messages';
                UPDATE meta SET value = value + NEW.size WHERE key = 'bytes';
            END;
            CREATE TRIGGER message_counted_out AFTER DELETE ON message BEGIN
                UPDATE meta SET value = value - 1 WHERE key = 'messages';
                UPDATE meta SET value = value - OLD.size WHERE key = 'bytes';
            END;
            INSERT INTO message (topic, qos, retain, created_at, size, payload) VALUES ('t', 1, 0, 1000.0, 2, x'41');
            PRAGMA user_version = 1;
            """
        )
    db.close()
    with open_buffer(path) as buffer:
        assert [m.payload for m in buffer.peek(10)] == [b"A"]
        buffer.append(TOPIC, b"new", readings=4, now=1001.0)
        stats = buffer.stats()
        assert (stats.messages, stats.readings) == (2, 4)  # the old message counts no readings
        buffer.delete([m.id for m in buffer.peek(10)])
        assert (buffer.stats().messages, buffer.stats().readings, buffer.stats().bytes) == (0, 0, 0)


def test_a_round_takes_the_newest_live_messages_and_the_oldest_backlog(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db") as buffer:
        for index in range(6):
            buffer.append(TOPIC, b"old%d" % index, now=1000.0)
        watermark = buffer.stats().last_id
        for index in range(4):
            buffer.append(TOPIC, b"live%d" % index, now=2000.0)
        live, backlog = buffer.peek_round(live_after=watermark, live_limit=3, backlog_limit=2)
    assert [m.payload for m in live] == [b"live1", b"live2", b"live3"]  # the newest, in their order
    assert [m.payload for m in backlog] == [b"old0", b"old1"]


def stats(messages: int, size: int, oldest: float | None = 1000.0) -> BufferStats:
    return BufferStats(messages, messages * 10, size, oldest, messages)


def test_the_time_to_full_follows_the_growth_and_is_infinite_when_not_growing() -> None:
    meter = BacklogMeter(max_bytes=10_000, max_messages=1_000_000, tau_s=0.001)  # no smoothing: exact figures
    totals = {"appended_messages": 0, "acked_messages": 0, "acked_bytes": 0}
    first = meter.update(stats(0, 0, None), now=0.0, wall_now=1000.0, appended_bytes=0, **totals)
    assert math.isinf(first.seconds_to_full)
    # 100 bytes a second in, nothing acknowledged: 2,000 used of 10,000 -> 80 s left.
    totals["appended_messages"] = 20
    growing = meter.update(stats(20, 2000), now=20.0, wall_now=1020.0, appended_bytes=2000, **totals)
    assert growing.seconds_to_full == 80.0
    assert (growing.messages, growing.readings, growing.oldest_age_s, growing.max_bytes) == (20, 200, 20.0, 10_000)
    assert growing.as_status() == {
        "messages": 20,
        "readings": 200,
        "oldest_age_s": 20.0,
        "bytes": 2000,
        "max_bytes": 10_000,
        "seconds_to_full": 80.0,
    }
    # Draining: as much acknowledged as appended and more -> not growing, no estimate (null in the status).
    totals |= {"acked_messages": 20, "acked_bytes": 3000}
    draining = meter.update(stats(10, 1000), now=30.0, wall_now=1030.0, appended_bytes=2500, **totals)
    assert math.isinf(draining.seconds_to_full)
    assert draining.as_status()["seconds_to_full"] is None


def test_growth_that_the_bound_already_drops_still_counts_down_to_zero() -> None:
    meter = BacklogMeter(max_bytes=1000, max_messages=1_000_000, tau_s=0.001)
    common = {"acked_bytes": 0, "appended_messages": 0, "acked_messages": 0}
    meter.update(stats(10, 1000), now=0.0, wall_now=1000.0, appended_bytes=5000, **common)
    full = meter.update(stats(10, 1000), now=10.0, wall_now=1010.0, appended_bytes=6000, **common)
    assert full.seconds_to_full == 0.0  # the file stays at its bound, but 100 bytes/s still come in


def test_the_backlog_in_the_gateway_status_is_read_back_by_the_contract() -> None:
    backlog = {"messages": 3, "readings": 30, "oldest_age_s": 12.5, "bytes": 900, "max_bytes": 10_000}
    payload = encode_status(True, backlog=backlog | {"seconds_to_full": None})
    assert orjson.loads(payload)["backlog"]["seconds_to_full"] is None
    status = StatusPayload.model_validate_json(payload)
    assert status.online is True
    assert status.backlog is not None
    assert (status.backlog.messages, status.backlog.readings, status.backlog.oldest_age_s) == (3, 30, 12.5)
    assert status.backlog.seconds_to_full is None


class RecordingTracker:
    """Acknowledges every publish at once and remembers the payloads in order."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        self.sent.append(payload)
        return 0


async def test_replay_sends_live_messages_first_and_paces_the_backlog(tmp_path: Path) -> None:
    config = parse_config(
        f"""
site: plant1
gateway_id: edge-01
broker: {{host: 127.0.0.1, port: 1}}
buffer: {{path: {tmp_path / "buffer.db"}, replay_rate_per_s: 80}}
metrics_port: null
devices:
  - {{machine: press-9, protocol: modbus, host: 127.0.0.1, port: 1, tags: [{{name: temp, address: 0}}]}}
"""
    )
    gateway = Gateway(config)
    for index in range(20):  # what an outage left
        await gateway.buffer.append(TOPIC, b"old%d" % index, now=1000.0)
    watermark = (await gateway.buffer.stats()).last_id
    for index in range(2):  # read since the broker came back
        await gateway.buffer.append(TOPIC, b"live%d" % index, now=2000.0)
    tracker, stop = RecordingTracker(), asyncio.Event()
    drain = asyncio.create_task(gateway._drain_buffer(cast(PubackTracker, tracker), stop, live_after=watermark))
    try:
        while len(tracker.sent) < 6:  # noqa: ASYNC110 -- the pacing under test sets the rhythm
            await asyncio.sleep(0.01)
        # A new live message jumps the rest of the backlog.
        await gateway.buffer.append(TOPIC, b"live2", now=2001.0)
        gateway._new_data.set()
        while (await gateway.buffer.depth())[0]:  # noqa: ASYNC110 -- as above
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(drain, timeout=5)
        await gateway.buffer.close()
    # 80 per second in bursts of 0.05 s: the first round carries the live messages and 4 of the backlog.
    assert tracker.sent[:6] == [b"live0", b"live1", b"old0", b"old1", b"old2", b"old3"]
    rest = tracker.sent[6:]
    assert sorted(rest) == sorted([b"live2", *(b"old%d" % i for i in range(4, 20))])
    assert rest.index(b"live2") < rest.index(b"old19")  # not behind the whole backlog
    assert [p for p in tracker.sent if p.startswith(b"old")] == [b"old%d" % i for i in range(20)]  # oldest first
    assert gateway.metrics.published._value.get() == 23
