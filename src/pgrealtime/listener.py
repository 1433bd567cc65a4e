"""Deliver messages other writers committed: SQL `realtime.publish()` in an
application's trigger, or another server process.

A NOTIFY carries '<id>:<origin>'; the row is read from PostgreSQL, the source of
truth. NOTIFY is only a wake-up: if the listening connection drops, the server
reconnects with backoff for as long as it takes and then reads what was committed
meanwhile from the table, so nothing is lost and nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime, timedelta

import asyncpg

from pgrealtime.delivery import Delivery
from pgrealtime.messages import stored_message_from_row

log = logging.getLogger(__name__)

CHANNEL = "realtime_message"
CATCH_UP_MARGIN = timedelta(seconds=60)  # transactions that began before the drop

SELECT_MESSAGES = (
    "SELECT id, channel_id, channel_name, event_name, payload::text AS payload_text,"
    " sender_type, sender_id, created_at, seq FROM realtime.messages"
)


class Listener:
    def __init__(self, url: str, delivery: Delivery, origin: str) -> None:
        self.url = url
        self.delivery = delivery
        self.origin = origin
        self.connected = asyncio.Event()
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lost_at: datetime | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        message_id, _, origin = payload.partition(":")
        if origin == self.origin or self.delivery.seen(message_id):
            return
        self._pending.append(message_id)
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if self._lost_at is not None:
                    await self._catch_up(conn, self._lost_at - CATCH_UP_MARGIN)
                    log.info("listener reconnected; caught up since %s", self._lost_at)
                self._lost_at = None
                self.connected.set()
                delay = 0.2
                await self._deliver_loop(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener connection lost: %s", exc)
            finally:
                self.connected.clear()
                if self._lost_at is None:
                    self._lost_at = datetime.now().astimezone()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, 10.0)

    async def _deliver_loop(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            waiter = asyncio.create_task(self._wake.wait())
            lost_waiter = asyncio.create_task(lost.wait())
            await asyncio.wait({waiter, lost_waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            lost_waiter.cancel()
            self._wake.clear()
            ids, self._pending = self._pending, []
            if ids:
                rows = await conn.fetch(
                    SELECT_MESSAGES + " WHERE id = ANY($1::uuid[]) ORDER BY seq", ids
                )
                for row in rows:
                    self.delivery.deliver(stored_message_from_row(row))
        raise ConnectionError("listener connection terminated")

    async def _catch_up(self, conn: asyncpg.Connection, since: datetime) -> None:
        rows = await conn.fetch(SELECT_MESSAGES + " WHERE created_at >= $1 ORDER BY seq", since)
        for row in rows:
            self.delivery.deliver(stored_message_from_row(row))
