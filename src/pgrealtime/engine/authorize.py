"""Subscribe permission checks, sent to PostgreSQL in batches.

Each check runs `realtime.authorize_subscribe` under the caller's role and claims;
checks that arrive while a batch is in flight go together in the next round trip
(`batching.py`, as for publishes), so a storm of subscribes costs a few queries
instead of one each, and a lone subscribe waits for no one.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from dataclasses import dataclass

import asyncpg

from pgrealtime.auth.principal import Principal
from pgrealtime.engine.batching import drain_in_batches

CHECK_BATCH_SQL = (
    "SELECT idx, status, channel_id, position"
    " FROM realtime.authorize_subscribe_batch($1::text[], $2::text[], $3::text[])"
)


@dataclass(frozen=True, slots=True)
class SubscribeCheck:
    status: str  # 'ok' | 'no_channel' | 'denied'
    channel_id: str | None  # the governing channel
    position: int  # the channel name's position now: live messages follow it


@dataclass(slots=True)
class _Pending:
    principal: Principal
    channel: str
    future: asyncio.Future[SubscribeCheck]


class SubscribeChecks:
    def __init__(self, pool: asyncpg.Pool, max_batch: int = 500) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._task: asyncio.Task | None = None
        self.round_trips = 0

    async def check(self, principal: Principal, channel: str) -> SubscribeCheck:
        """May `principal` subscribe to `channel`? Raises what the query raised."""
        future: asyncio.Future[SubscribeCheck] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(principal, channel, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="subscribe-checks")
        return await future

    async def _drain(self) -> None:
        await drain_in_batches(self._queue, self.max_batch, self._round_trip)

    async def _round_trip(self, batch: list[_Pending]) -> None:
        self.round_trips += 1
        rows = await self.pool.fetch(
            CHECK_BATCH_SQL,
            [item.principal.role for item in batch],
            [item.principal.claims_json for item in batch],
            [item.channel for item in batch],
        )
        for row in rows:
            item = batch[row["idx"] - 1]
            if not item.future.done():
                channel_id = row["channel_id"]
                item.future.set_result(
                    SubscribeCheck(
                        row["status"],
                        # interned: every subscription of a channel keeps it
                        sys.intern(str(channel_id)) if channel_id is not None else None,
                        row["position"] or 0,
                    )
                )
