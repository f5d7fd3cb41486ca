"""Taking a batch off the queue, adaptively: as large as the load makes it, as small as a quiet plant needs.

Once the writer is free it takes every message already waiting, up to `max_readings` or `max_bytes`, without
waiting: under load the queue fills while the previous batch commits, so batches grow with the load (fewer, larger
transactions, which is what makes PostgreSQL fast). With fewer than `min_readings` waiting it waits for more, but
never past `max_age_s` after the first message arrived: a quiet plant sees its readings within that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def next_batch(
    queue: asyncio.Queue[T],
    *,
    max_readings: int,
    max_age_s: float,
    readings: Callable[[T], int],
    min_readings: int | None = None,
    max_bytes: int | None = None,
    size: Callable[[T], int] | None = None,
    arrived: Callable[[T], float] | None = None,
) -> list[T]:
    """Wait for one item; take what waits up to `max_readings` / `max_bytes`; below `min_readings` (default:
    `max_readings`) wait for more until `max_age_s` after the first item arrived (`arrived`: its
    `time.monotonic()`; default: when it was taken)."""
    floor = max_readings if min_readings is None else min_readings
    first = await queue.get()
    items = [first]
    total = readings(first)
    nbytes = size(first) if size is not None else 0
    deadline = (arrived(first) if arrived is not None else time.monotonic()) + max_age_s
    while total < max_readings and (max_bytes is None or nbytes < max_bytes):
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            remaining = deadline - time.monotonic()
            if total >= floor or remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # not wait_for: see core.retry.wait_or_stop
                    item = await queue.get()
            except TimeoutError:
                break
        items.append(item)
        total += readings(item)
        if size is not None:
            nbytes += size(item)
    return items
