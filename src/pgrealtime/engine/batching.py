"""Requests that queue while a round trip is in flight go together in the next one.

The publisher and the subscribe checks both work this way: callers append an item
with a future and start a drain task if none runs; the drain takes everything queued
(up to a limit) per round trip. A lone request waits for no one, and a storm costs a
few round trips instead of one each.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar


class Pending(Protocol):
    future: asyncio.Future[Any]


T = TypeVar("T", bound=Pending)


def take_batch(
    queue: deque[T], max_batch: int, max_bytes: int = 0, size: Callable[[T], int] | None = None
) -> list[T]:
    """The next batch: up to `max_batch` items and, when `max_bytes` is set, no more
    than `max_bytes` of `size` in all; an item larger than that on its own goes alone."""
    if not max_bytes or size is None:
        return [queue.popleft() for _ in range(min(len(queue), max_batch))]
    first = queue.popleft()
    batch = [first]
    total = size(first)
    while queue and len(batch) < max_batch:
        total += size(queue[0])
        if total > max_bytes:
            break
        batch.append(queue.popleft())
    return batch


async def drain_in_batches(
    queue: deque[T],
    max_batch: int,
    round_trip: Callable[[list[T]], Awaitable[None]],
    max_bytes: int = 0,
    size: Callable[[T], int] | None = None,
) -> None:
    """Until `queue` is empty: take a batch (see take_batch) and `round_trip` it. If a
    round trip raises, every item of its batch not answered yet gets that error."""
    while queue:
        batch = take_batch(queue, max_batch, max_bytes, size)
        try:
            await round_trip(batch)
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
