"""The gateway's on-disk queue: FIFO, bounded with counted drops, and the file survives restarts and SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.buffer import (
    AppendResult,
    AsyncDiskBuffer,
    BufferedMessage,
    DiskBuffer,
    DiskBufferError,
    MessageTooLarge,
    OutgoingMessage,
    message_size,
)

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "shopfloor/v1/plant1/press-3/telemetry"


def open_buffer(
    path: Path, *, max_messages: int = 1_000_000, max_bytes: int = 1024**3, max_age_s: float = 3600.0
) -> DiskBuffer:
    return DiskBuffer(path, max_messages=max_messages, max_bytes=max_bytes, max_age_s=max_age_s)


def everything(buffer: DiskBuffer) -> list[BufferedMessage]:
    return buffer.peek(10_000_000)


def payloads(buffer: DiskBuffer) -> list[bytes]:
    return [message.payload for message in everything(buffer)]


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        (result,) = db.execute("PRAGMA integrity_check").fetchone()
    db.close()
    return str(result)


def test_messages_come_out_oldest_first_and_stay_until_deleted(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db") as buffer:
        ids = [buffer.append(TOPIC, b"m%d" % i, now=1000.0 + i).id for i in range(5)]
        assert ids == sorted(ids)
        assert [m.payload for m in buffer.peek(3)] == [b"m0", b"m1", b"m2"]
        assert [m.payload for m in buffer.peek(3)] == [b"m0", b"m1", b"m2"]  # peeking removes nothing
        assert payloads(buffer) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert buffer.peek(0) == []


def test_a_message_comes_back_exactly_as_it_was_appended(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3  # binary, with NUL bytes
    with open_buffer(tmp_path / "buffer.db") as buffer:
        result = buffer.append("shopfloor/v1/plant1/_gateway/gw1/status", payload, qos=0, retain=True, now=1234.5)
        assert result == AppendResult(id=result.id, dropped=0)
        assert buffer.peek(1) == [
            BufferedMessage(result.id, "shopfloor/v1/plant1/_gateway/gw1/status", payload, 0, True, 1234.5)
        ]
        buffer.append(TOPIC, b"", now=1235.0)
        assert buffer.peek(2)[1] == BufferedMessage(result.id + 1, TOPIC, b"", 1, False, 1235.0)


def test_acknowledged_messages_are_deleted_and_unknown_ids_are_ignored(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db") as buffer:
        ids = [buffer.append(TOPIC, b"m%d" % i, now=1000.0).id for i in range(5)]
        assert buffer.delete([ids[0], ids[2]]) == 2
        assert payloads(buffer) == [b"m1", b"m3", b"m4"]
        # A PUBACK for a message already gone (dropped meanwhile, or acknowledged twice) changes nothing.
        assert buffer.delete([ids[0], ids[4] + 100]) == 0
        assert buffer.delete([]) == 0
        assert buffer.depth() == (3, 3 * message_size(TOPIC, b"m0"))


def test_the_count_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_messages=3) as buffer:
        results = [buffer.append(TOPIC, b"m%d" % i, now=1000.0) for i in range(5)]
        assert [r.dropped for r in results] == [0, 0, 0, 1, 1]
        assert payloads(buffer) == [b"m2", b"m3", b"m4"]
        assert buffer.depth()[0] == 3
        assert buffer.dropped_total() == {"overflow": 2, "expired": 0}


def test_the_byte_bound_drops_as_many_of_the_oldest_as_needed(tmp_path: Path) -> None:
    # Each size counts the 1-byte topic: 30, 30, 30 then 50 in a 100-byte buffer.
    with open_buffer(tmp_path / "buffer.db", max_bytes=100) as buffer:
        for i in range(3):
            assert buffer.append("t", bytes([i]) * 29, now=1000.0).dropped == 0
        assert buffer.depth() == (3, 90)
        # 90 + 50 is 40 over: the two oldest (60 bytes) must go, the third stays.
        assert buffer.append("t", b"x" * 49, now=1000.0).dropped == 2
        assert [m.payload[:1] for m in everything(buffer)] == [b"\x02", b"x"]
        assert buffer.depth() == (2, 80)
        assert buffer.dropped_total() == {"overflow": 2, "expired": 0}
        # Exactly full is allowed.
        assert buffer.append("t", b"y" * 19, now=1000.0).dropped == 0
        assert buffer.depth() == (3, 100)


def test_a_message_bigger_than_the_whole_buffer_is_refused_and_drops_nothing(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_bytes=100) as buffer:
        buffer.append("t", b"a" * 50, now=1000.0)
        with pytest.raises(MessageTooLarge, match="101-byte message"):
            buffer.append("t", b"b" * 100, now=1000.0)
        assert payloads(buffer) == [b"a" * 50]
        assert buffer.dropped_total() == {"overflow": 0, "expired": 0}


def test_append_many_queues_like_appends_one_by_one_in_one_transaction(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_messages=2, max_age_s=10) as buffer:
        buffer.append(TOPIC, b"old", now=0.0)
        buffer.append(TOPIC, b"kept", now=5.0)
        results = buffer.append_many(
            [
                OutgoingMessage(TOPIC, b"a"),
                OutgoingMessage(TOPIC, b"b", qos=0, retain=True),
                OutgoingMessage(TOPIC, b"c"),
            ],
            now=12.0,
        )
        # "old" expired (counted on the first result); then "kept" made room for "b", and "a" for "c".
        assert [r.dropped for r in results] == [1, 1, 1]
        assert [r.id for r in results] == sorted(r.id for r in results)
        assert [(m.payload, m.qos, m.retain) for m in everything(buffer)] == [(b"b", 0, True), (b"c", 1, False)]
        assert buffer.dropped_total() == {"overflow": 2, "expired": 1}
        assert buffer.append_many([], now=12.0) == []


@pytest.mark.parametrize(
    ("bad", "error"),
    [(OutgoingMessage(TOPIC, b"x", qos=5), ValueError), (OutgoingMessage("t", b"x" * 2000), MessageTooLarge)],
)
def test_append_many_with_one_bad_message_queues_none_of_them(
    tmp_path: Path, bad: OutgoingMessage, error: type[Exception]
) -> None:
    with open_buffer(tmp_path / "buffer.db", max_messages=1, max_bytes=1024) as buffer:
        buffer.append(TOPIC, b"first", now=0.0)
        with pytest.raises(error):
            buffer.append_many([OutgoingMessage(TOPIC, b"good"), bad], now=1.0)
        assert payloads(buffer) == [b"first"]
        assert buffer.dropped_total() == {"overflow": 0, "expired": 0}


def test_a_bad_qos_is_refused(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db") as buffer, pytest.raises(ValueError, match="qos"):
        buffer.append(TOPIC, b"x", qos=3, now=1000.0)


def test_messages_older_than_max_age_expire_on_append_and_on_expire(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_age_s=10) as buffer:
        buffer.append(TOPIC, b"a", now=0.0)
        buffer.append(TOPIC, b"b", now=5.0)
        assert buffer.append(TOPIC, b"c", now=12.0).dropped == 1  # a is 12 s old
        assert payloads(buffer) == [b"b", b"c"]
        assert buffer.expire(now=15.0) == 0  # b is exactly 10 s old: not older than max_age_s
        assert buffer.expire(now=15.5) == 1
        assert payloads(buffer) == [b"c"]
        assert buffer.dropped_total() == {"overflow": 0, "expired": 2}
        assert buffer.expire(now=100.0) == 1
        assert buffer.depth() == (0, 0)
        assert buffer.dropped_total() == {"overflow": 0, "expired": 3}


def test_expiry_and_overflow_in_one_append_are_both_counted(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_messages=2, max_age_s=10) as buffer:
        buffer.append(TOPIC, b"old", now=0.0)
        buffer.append(TOPIC, b"a", now=9.0)
        buffer.append(TOPIC, b"b", now=11.0)  # old expires first, so nothing overflows
        assert buffer.dropped_total() == {"overflow": 0, "expired": 1}
        assert buffer.append(TOPIC, b"c", now=11.0).dropped == 1
        assert payloads(buffer) == [b"b", b"c"]
        assert buffer.dropped_total() == {"overflow": 1, "expired": 1}


def test_expiry_never_leaves_a_hole_when_the_clock_stepped_back(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "buffer.db", max_age_s=10) as buffer:
        buffer.append(TOPIC, b"before", now=100.0)
        buffer.append(TOPIC, b"after-step-back", now=50.0)
        # "after-step-back" looks old, but it waits behind the younger message that was queued before it.
        assert buffer.expire(now=105.0) == 0
        assert buffer.expire(now=111.0) == 2
        assert buffer.dropped_total()["expired"] == 2


def test_depth_and_drop_counters_are_the_same_after_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    with open_buffer(path, max_messages=4, max_age_s=100) as buffer:
        for i in range(6):
            buffer.append(TOPIC, b"x" * i, now=float(i))
        buffer.append(TOPIC, b"late", now=103.5)  # expires the two made at 2 and 3 (older than 3.5)
        buffer.delete([buffer.peek(1)[0].id])
        before = (buffer.depth(), buffer.dropped_total(), everything(buffer))
    assert before[1] == {"overflow": 2, "expired": 2}

    with open_buffer(path, max_messages=4, max_age_s=100) as reopened:
        assert (reopened.depth(), reopened.dropped_total(), everything(reopened)) == before
        messages = everything(reopened)
        assert reopened.depth() == (len(messages), sum(message_size(m.topic, m.payload) for m in messages))
        # Counters keep adding up after the restart.
        for i in range(4):
            reopened.append(TOPIC, b"n%d" % i, now=105.0)
        assert reopened.dropped_total() == {"overflow": 4, "expired": 2}
    assert integrity(path) == "ok"


def test_ids_are_never_reused_even_after_the_queue_emptied_and_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    with open_buffer(path) as buffer:
        ids = [buffer.append(TOPIC, b"x", now=1.0).id for _ in range(3)]
        buffer.delete(ids)
    with open_buffer(path) as buffer:
        # A late PUBACK for ids[-1] must never delete this new, unsent message.
        assert buffer.append(TOPIC, b"y", now=2.0).id > ids[-1]


def test_a_closed_buffer_refuses_to_be_used(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path / "buffer.db")
    buffer.close()
    buffer.close()  # idempotent
    with pytest.raises(DiskBufferError, match="closed"):
        buffer.peek(1)


def test_a_file_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    open_buffer(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(DiskBufferError, match="newer"):
        open_buffer(path)


def test_a_file_that_is_not_a_buffer_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.write_bytes(b"this is not an SQLite database, it is the wrong file" * 100)
    with pytest.raises(DiskBufferError, match="not a usable buffer file"):
        open_buffer(path)
    assert path.read_bytes().startswith(b"this is not an SQLite database")


def test_the_folder_of_the_file_is_created(tmp_path: Path) -> None:
    with open_buffer(tmp_path / "data" / "gateway" / "buffer.db") as buffer:
        buffer.append(TOPIC, b"x", now=1.0)
    assert (tmp_path / "data" / "gateway" / "buffer.db").is_file()


_APPEND_THEN_DIE = """
import os, signal, sys
from gateway.buffer import DiskBuffer
buffer = DiskBuffer(sys.argv[1], max_messages=1_000_000, max_bytes=2**30, max_age_s=3600)
for i in range(1000):
    buffer.append(sys.argv[2], b"%d" % i, now=1000.0 + i)
os.kill(os.getpid(), signal.SIGKILL)  # never closes: whatever was committed must be in the file
"""

_APPEND_UNTIL_KILLED = """
import sys
from gateway.buffer import DiskBuffer
buffer = DiskBuffer(sys.argv[1], max_messages=1_000_000, max_bytes=2**30, max_age_s=3600)
for i in range(1_000_000):
    buffer.append(sys.argv[2], b"%d" % i, now=1000.0)
    print(i, flush=True)  # printed only once the append has committed
"""


def test_every_committed_append_survives_a_sigkill_in_order_and_the_file_is_sound(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    child = subprocess.run(  # noqa: S603 - our own interpreter running a fixed script
        [sys.executable, "-c", _APPEND_THEN_DIE, str(path), TOPIC], cwd=ROOT, capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert path.with_name("buffer.db-wal").exists()  # killed before close: recovery has to come from the WAL

    assert integrity(path) == "ok"
    with open_buffer(path) as buffer:
        messages = everything(buffer)
        assert [m.payload for m in messages] == [b"%d" % i for i in range(1000)]
        assert [m.created_at for m in messages] == [1000.0 + i for i in range(1000)]
        assert [m.id for m in messages] == sorted(m.id for m in messages)
        assert buffer.depth() == (1000, sum(message_size(TOPIC, m.payload) for m in messages))
        assert buffer.dropped_total() == {"overflow": 0, "expired": 0}
        # And it keeps working: the next message goes after them.
        assert buffer.append(TOPIC, b"next", now=3000.0).id > messages[-1].id


def test_a_sigkill_in_the_middle_of_appending_keeps_a_gapless_prefix_with_every_confirmed_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    with subprocess.Popen(  # noqa: S603 - our own interpreter running a fixed script
        [sys.executable, "-c", _APPEND_UNTIL_KILLED, str(path), TOPIC],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        confirmed = -1
        for line in child.stdout:
            confirmed = int(line)
            if confirmed >= 500:
                break
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert confirmed >= 500

    assert integrity(path) == "ok"
    with open_buffer(path) as buffer:
        stored = [int(payload) for payload in payloads(buffer)]
        assert stored == list(range(len(stored)))  # in order, nothing missing in between
        assert len(stored) > confirmed  # every append the child confirmed is there
        assert buffer.depth() == (len(stored), sum(message_size(TOPIC, b"%d" % i) for i in stored))


async def test_appends_peeks_and_deletes_interleave_safely_through_the_async_buffer(tmp_path: Path) -> None:
    per_producer = 1500
    topics = [f"shopfloor/v1/plant1/m{n}/telemetry" for n in range(3)]
    received: dict[str, list[int]] = {topic: [] for topic in topics}
    deleted = 0

    async with AsyncDiskBuffer(tmp_path / "buffer.db", max_messages=100_000, max_bytes=2**30, max_age_s=3600) as buffer:

        async def produce(topic: str) -> None:
            for i in range(per_producer):
                await buffer.append(topic, b"%d" % i, now=1000.0)

        async def consume() -> None:
            nonlocal deleted
            while deleted < per_producer * len(topics):
                batch = await buffer.peek(64)
                if not batch:
                    await asyncio.sleep(0.001)
                    continue
                for message in batch:
                    received[message.topic].append(int(message.payload))
                deleted += await buffer.delete(m.id for m in batch)

        async with asyncio.timeout(120), asyncio.TaskGroup() as group:
            for topic in topics:
                group.create_task(produce(topic), name=f"test:produce:{topic}")
            group.create_task(consume(), name="test:consume")

        assert await buffer.depth() == (0, 0)
        assert await buffer.dropped_total() == {"overflow": 0, "expired": 0}
        assert await buffer.expire(now=10_000.0) == 0
    # Each producer's messages came out once each, in the order it appended them.
    assert received == {topic: list(range(per_producer)) for topic in topics}


async def test_the_async_buffer_opens_on_first_use_keeps_its_file_and_refuses_use_once_closed(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    buffer = AsyncDiskBuffer(path, max_messages=2, max_bytes=1024, max_age_s=60)
    assert not path.exists()  # constructing does no I/O
    results = [await buffer.append(TOPIC, b"%d" % i, now=1000.0) for i in range(3)]
    assert [r.dropped for r in results] == [0, 0, 1]
    await buffer.close()
    await buffer.close()  # idempotent
    with pytest.raises(DiskBufferError, match="closed"):
        await buffer.peek(1)

    async with AsyncDiskBuffer(path, max_messages=2, max_bytes=1024, max_age_s=60) as again:
        await again.open()  # already open: nothing happens
        assert [m.payload for m in await again.peek(10)] == [b"1", b"2"]
        assert await again.dropped_total() == {"overflow": 1, "expired": 0}
        ids = [r.id for r in await again.append_many([OutgoingMessage(TOPIC, b"3")], now=1001.0)]
        assert [m.id for m in await again.peek(10)][-1:] == ids


async def test_a_buffer_file_that_cannot_be_opened_fails_at_open(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    buffer = AsyncDiskBuffer(tmp_path / "not-a-folder" / "buffer.db", max_messages=2, max_bytes=1024, max_age_s=60)
    with pytest.raises(OSError, match="not-a-folder"):
        await buffer.open()
    await buffer.close()


def test_a_hundred_thousand_messages_go_in_and_come_out_exactly_once_in_order(tmp_path: Path) -> None:
    total, batch_size = 100_000, 1000
    with open_buffer(tmp_path / "buffer.db") as buffer:
        for start in range(0, total, batch_size):
            batch = [OutgoingMessage(TOPIC, b"%d" % i) for i in range(start, start + batch_size)]
            assert [r.dropped for r in buffer.append_many(batch, now=1000.0 + start / 1000)] == [0] * batch_size
        assert buffer.depth() == (total, sum(message_size(TOPIC, b"%d" % i) for i in range(total)))
        drained: list[int] = []
        while messages := buffer.peek(batch_size):
            drained.extend(int(m.payload) for m in messages)
            assert buffer.delete([m.id for m in messages]) == len(messages)
        assert drained == list(range(total))
        assert buffer.depth() == (0, 0)
        assert buffer.dropped_total() == {"overflow": 0, "expired": 0}
