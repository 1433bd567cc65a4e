"""Hand stored messages to local subscribers and record how many got each one.

Both paths end here: publishes made on this process, and messages other writers
committed (SQL `realtime.publish()`, other server processes) that the listener reads.
Audience counts are written in batches off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

import asyncpg

from pgrealtime.hub import Hub
from pgrealtime.messages import StoredMessage

log = logging.getLogger(__name__)

RECENT_IDS = 200_000  # ids remembered to never deliver one message twice


class Delivery:
    def __init__(self, hub: Hub, pool: asyncpg.Pool, flush_interval: float = 0.2) -> None:
        self.hub = hub
        self.pool = pool
        self.flush_interval = flush_interval
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._counts: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    def seen(self, message_id: str) -> bool:
        return message_id in self._recent

    def deliver(self, message: StoredMessage) -> int:
        """Fan out once; a message already delivered here is skipped."""
        if message.id in self._recent:
            return 0
        self._recent[message.id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        audience = self.hub.broadcast(message.channel, message.frame())
        if audience:
            self._counts[message.id] = self._counts.get(message.id, 0) + audience
        return audience

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="audience-counts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("audience counts not written yet: %s", exc)

    async def flush(self) -> None:
        """Write pending wsAudienceCount values in one statement."""
        if not self._counts:
            return
        counts, self._counts = self._counts, {}
        try:
            await self.pool.execute(
                "UPDATE realtime.messages m SET ws_audience_count = m.ws_audience_count + v.n"
                " FROM unnest($1::uuid[], $2::int[]) AS v(id, n) WHERE m.id = v.id",
                list(counts),
                list(counts.values()),
            )
        except BaseException:
            for key, value in counts.items():  # keep them for the next try
                self._counts[key] = self._counts.get(key, 0) + value
            raise
