"""Store and policy-check publishes in batches, then fan them out.

Each publish is an INSERT under the caller's role (RLS WITH CHECK decides). Publishes
queue up in a few lanes (by channel, so one channel's messages stay in order); a lane
sends everything queued in one round trip to `realtime.publish_batch`, so the cost of
a round trip is shared under load and a lone publish waits for no one.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from pgrealtime.auth import Principal
from pgrealtime.delivery import Delivery
from pgrealtime.messages import StoredMessage

log = logging.getLogger(__name__)

PUBLISH_BATCH_SQL = (
    "SELECT idx, status, message_id, channel_id, created_at, seq, detail"
    " FROM realtime.publish_batch($1::text[], $2::text[], $3::text[], $4::text[],"
    " $5::text[]::jsonb[], $6::uuid[], $7::text)"
)


class PublishRefused(Exception):
    """The message was not stored: `status` is 'no_channel' or 'denied'."""

    def __init__(self, status: str, detail: str | None = None) -> None:
        super().__init__(detail or status)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class _Item:
    principal: Principal
    channel: str
    event: str
    payload_json: bytes
    future: asyncio.Future[StoredMessage]


class Publisher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        delivery: Delivery,
        origin: str,
        lanes: int = 4,
        max_batch: int = 500,
    ) -> None:
        self.pool = pool
        self.delivery = delivery
        self.origin = origin
        self.max_batch = max_batch
        self._queues: list[deque[_Item]] = [deque() for _ in range(lanes)]
        self._running: list[bool] = [False] * lanes
        self._tasks: set[asyncio.Task] = set()

    async def publish(
        self, principal: Principal, channel: str, event: str, payload: dict[str, Any]
    ) -> StoredMessage:
        """Store, fan out, and return the message; raises PublishRefused."""
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        lane = zlib.crc32(channel.encode()) % len(self._queues)
        self._queues[lane].append(_Item(principal, channel, event, orjson.dumps(payload), future))
        if not self._running[lane]:
            self._running[lane] = True
            task = asyncio.create_task(self._drain(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, lane: int) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                try:
                    rows = await self.pool.fetch(
                        PUBLISH_BATCH_SQL,
                        [item.principal.role for item in batch],
                        [item.principal.claims_json for item in batch],
                        [item.channel for item in batch],
                        [item.event for item in batch],
                        [item.payload_json.decode() for item in batch],
                        [item.principal.user_id for item in batch],
                        self.origin,
                    )
                except Exception as exc:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                self._settle(batch, rows)
        finally:
            self._running[lane] = False

    def _settle(self, batch: list[_Item], rows: list[asyncpg.Record]) -> None:
        """Fan out what was stored, in order, then answer each publisher."""
        for row in rows:
            item = batch[row["idx"] - 1]
            if row["status"] != "ok":
                item.future.set_exception(PublishRefused(row["status"], row["detail"]))
                continue
            message = StoredMessage(
                id=str(row["message_id"]),
                channel=item.channel,
                channel_id=str(row["channel_id"]),
                event=item.event,
                payload_json=item.payload_json,
                sender_type="user",
                sender_id=item.principal.user_id,
                created_at=row["created_at"],
                seq=row["seq"],
            )
            self.delivery.deliver(message)
            if not item.future.done():
                item.future.set_result(message)
