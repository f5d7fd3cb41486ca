"""Batches close on size or on the age of their first message, whichever comes first."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from core.settings import ConfigurationError, IngestorSettings
from ingestor.batching import next_batch


async def test_a_full_queue_gives_a_batch_of_at_least_max_readings_at_once() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for size in (400, 400, 400, 400):
        queue.put_nowait(size)
    # A 10-minute age: only the size can close this batch within the test's timeout.
    batch = await asyncio.wait_for(next_batch(queue, max_readings=1000, max_age_s=600, readings=lambda n: n), 10)
    assert batch == [400, 400, 400]  # 1200 >= 1000
    assert queue.qsize() == 1


async def test_a_trickle_is_flushed_when_the_first_message_is_old_enough() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def trickle() -> None:
        for _ in range(100):
            queue.put_nowait(1)
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(trickle())
    batch = await next_batch(queue, max_readings=10_000, max_age_s=0.2, readings=lambda n: n)
    still_producing = not producer.done()
    producer.cancel()
    # Closed by age: more than the first message, long before the hundredth (about a second of trickle).
    assert still_producing
    assert 2 <= len(batch) < 100


async def test_it_waits_for_the_first_message() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(next_batch(queue, max_readings=5, max_age_s=0.05, readings=lambda n: n))
    await asyncio.sleep(0.2)
    assert not task.done()
    queue.put_nowait(7)
    assert await asyncio.wait_for(task, timeout=1) == [7]


async def test_messages_without_readings_still_close_by_age() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for _ in range(3):
        queue.put_nowait(0)  # statuses and dead letters carry no readings
    assert await next_batch(queue, max_readings=1, max_age_s=0.05, readings=lambda n: n) == [0, 0, 0]


async def test_a_cancellation_racing_an_arriving_message_is_never_lost() -> None:
    # On Python 3.11, asyncio.wait_for returned the message and dropped the cancellation when both came in the
    # same loop iteration: the ingestor (and the gateway's OPC-UA source, built the same way) then never stopped.
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    task = asyncio.create_task(next_batch(queue, max_readings=10, max_age_s=60, readings=lambda _: 1))
    await asyncio.sleep(0)  # the task took the first message and now waits for more
    queue.put_nowait(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert task.cancelled()


async def test_a_free_writer_takes_everything_waiting_above_the_minimum_without_waiting() -> None:
    """Under load the queue fills while the previous batch commits: the next batch is all of it (up to the max)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for _ in range(30):
        queue.put_nowait(1000)
    batch = await asyncio.wait_for(
        next_batch(queue, min_readings=1000, max_readings=50_000, max_age_s=600, readings=lambda n: n), 10
    )
    assert len(batch) == 30
    assert queue.empty()


async def test_below_the_minimum_it_waits_but_not_past_the_first_messages_age() -> None:
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    # The first message arrived 0.15 s ago: with a 0.2 s age, only ~0.05 s are left to wait for the minimum.
    queue.put_nowait((10, time.monotonic() - 0.15))
    started = time.monotonic()
    batch = await next_batch(
        queue,
        min_readings=1000,
        max_readings=50_000,
        max_age_s=0.2,
        readings=lambda item: item[0],
        arrived=lambda item: item[1],
    )
    assert len(batch) == 1
    assert time.monotonic() - started < 0.15


async def test_the_byte_bound_closes_a_batch_before_the_reading_bound() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for _ in range(10):
        queue.put_nowait(100)
    batch = await next_batch(
        queue,
        min_readings=1,
        max_readings=1_000_000,
        max_bytes=1_000_000,
        max_age_s=600,
        readings=lambda n: n,
        size=lambda _: 300_000,
    )
    assert len(batch) == 4  # 4 x 300 kB reach 1 MB
    assert queue.qsize() == 6


def test_a_minimum_above_the_maximum_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="INGEST_BATCH_MIN_READINGS"):
        IngestorSettings(ingest_batch_min_readings=5000, ingest_batch_max_readings=2000)
    with pytest.raises(ValidationError):
        IngestorSettings(ingest_writers=0)
    assert IngestorSettings(ingest_batch_min_readings=2000, ingest_batch_max_readings=2000).ingest_writers == 1
