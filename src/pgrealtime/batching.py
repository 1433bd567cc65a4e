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


async def drain_in_batches(
    queue: deque[T], max_batch: int, round_trip: Callable[[list[T]], Awaitable[None]]
) -> None:
    """Until `queue` is empty: take up to `max_batch` items and `round_trip` them. If a
    round trip raises, every item of its batch not answered yet gets that error."""
    while queue:
        batch = [queue.popleft() for _ in range(min(len(queue), max_batch))]
        try:
            await round_trip(batch)
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
