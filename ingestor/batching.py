"""Taking a batch off the queue: as soon as it holds enough readings, or when its first message is old enough."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def next_batch(
    queue: asyncio.Queue[T], *, max_readings: int, max_age_s: float, readings: Callable[[T], int]
) -> list[T]:
    """Wait for one item, then take more until `max_readings` or until `max_age_s` after the first item."""
    loop = asyncio.get_running_loop()
    items = [await queue.get()]
    total = readings(items[0])
    deadline = loop.time() + max_age_s
    while total < max_readings:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # not wait_for: see core.retry.wait_or_stop
                    item = await queue.get()
            except TimeoutError:
                break
        items.append(item)
        total += readings(item)
    return items
