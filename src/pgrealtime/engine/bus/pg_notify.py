"""Deliver messages other writers committed: SQL `realtime.publish()` in an
application's trigger, or another server process.

A NOTIFY carries '<id>:<origin>'; the row is read from PostgreSQL, the source of
truth. A NOTIFY of this process's own publishes is skipped (the publisher fans them
out), except for those whose reply the publisher lost (see deliver_own). Payloads
that are not '<uuid>:<origin>' are ignored: any role may NOTIFY this channel, and one
malformed id would fail the whole read. NOTIFY is only a wake-up: if the listening
connection drops, the server reconnects with backoff for as long as it takes and
then reads, for every channel someone here watches, the positions past the last one
handed out, so nothing is lost; Ordering drops any position it has already handed
out, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import Counter
from collections.abc import Callable

import asyncpg

from pgrealtime.db.dedicated import close_quietly, wake_or_lost
from pgrealtime.engine.bus.base import BusSink
from pgrealtime.engine.messages import SELECT_MESSAGES, stored_message_from_row

log = logging.getLogger(__name__)

CHANNEL = "realtime_message"
CHANNELS_CHANGED = "realtime_channels"  # a channel row was created, changed or deleted
# Own publishes whose reply was lost, remembered until their NOTIFY comes (those that
# never committed are forgotten oldest first).
UNSETTLED_LIMIT = 10_000
# what realtime.notify_message() sends: NEW.id::text
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
CATCH_UP_SQL = (
    SELECT_MESSAGES + " WHERE (channel_name, position) IN ("
    "SELECT m.channel_name, m.position FROM realtime.messages m"
    " JOIN unnest($1::text[], $2::bigint[]) AS w(name, after)"
    " ON m.channel_name = w.name AND m.position > w.after)"
    " ORDER BY channel_name, position"
)


class Listener:
    """The `engine/bus/base.Bus` over LISTEN/NOTIFY; `delivery` is its `BusSink`."""

    def __init__(
        self,
        url: str,
        delivery: BusSink,
        origin: str,
        on_channels_changed: Callable[[], None] | None = None,
        *,
        messages: bool = True,
        only_origin: str | None = None,
    ) -> None:
        self.url = url
        # False: only the channels-changed notice (a broker carries the messages)
        self.messages = messages
        # set: deliver only notices of that origin ('' = SQL realtime.publish(), which a
        # broker's elected process reads once for the cluster)
        self.only_origin = only_origin
        self.delivery = delivery
        self.origin = origin
        self.on_channels_changed = on_channels_changed
        self.connected = asyncio.Event()
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lost = False
        self._unsettled: dict[str, None] = {}  # own message ids, in the order given
        self.outages = 0  # connections lost since start
        self.ignored = 0  # notifications that were not '<uuid>:<origin>'
        # for metrics: messages other writers stored (sql: realtime.publish(), peer:
        # another server process), and those read after a reconnect
        self.published: Counter[str] = Counter()
        self.caught_up = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        message_id, _, origin = payload.partition(":")
        if self.only_origin is not None and origin != self.only_origin:
            return
        if origin == self.origin:
            if not self._unsettled or self._unsettled.pop(message_id, 0) is not None:
                return  # fanned out by the publisher
        elif _UUID.fullmatch(message_id) is None:
            self.ignored += 1
            log.debug("ignored a notification that names no message: %.100r", payload)
            return
        if origin != self.origin:
            self.published["peer" if origin else "sql"] += 1
        self._pending.append(message_id)
        self._wake.set()

    def deliver_own(self, message_ids: list[str]) -> None:
        """Publishes of this process whose reply was lost: they may be committed, and
        were fanned out by no one. Read them now (their NOTIFY may have come and gone)
        and again when their NOTIFY comes (they may commit later); a message already
        handed out is dropped by Ordering."""
        for message_id in message_ids:
            self._unsettled[message_id] = None
        while len(self._unsettled) > UNSETTLED_LIMIT:
            del self._unsettled[next(iter(self._unsettled))]
        self._pending.extend(message_ids)
        self._wake.set()

    def _on_channels_changed(self, *args: object) -> None:
        """Channels changed: re-check subscriptions, unless this process made the change
        (the payload is its origin): its REST handler re-checked before answering."""
        if len(args) == 4 and args[3] == self.origin:
            return
        if self.on_channels_changed is not None:
            self.on_channels_changed()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                if self.messages:
                    await conn.add_listener(CHANNEL, self._on_notify)
                await conn.add_listener(CHANNELS_CHANGED, self._on_channels_changed)
                if self._lost:
                    caught_up = await self._catch_up(conn) if self.messages else 0
                    log.info("listener reconnected; %d messages caught up", caught_up)
                    self._on_channels_changed()  # changes made meanwhile went unheard
                self._lost = False
                self.connected.set()
                delay = 0.2
                await self._deliver_loop(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener connection lost: %s", exc)
            finally:
                self.connected.clear()
                if not self._lost:
                    self._lost = True
                    self.outages += 1
                if conn is not None:
                    await close_quietly(conn)
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, 10.0)

    async def _deliver_loop(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await wake_or_lost(self._wake, lost)
            ids, self._pending = self._pending, []
            if ids:
                rows = await conn.fetch(
                    SELECT_MESSAGES + " WHERE id = ANY($1::uuid[]) ORDER BY position", ids
                )
                for row in rows:
                    self.delivery.deliver(stored_message_from_row(row))
        raise ConnectionError("listener connection terminated")

    async def _catch_up(self, conn: asyncpg.Connection) -> int:
        """Everything committed past what each watched channel has seen here."""
        watched = self.delivery.tracked()
        if not watched:
            return 0
        rows = await conn.fetch(
            CATCH_UP_SQL, [channel for channel, _ in watched], [after for _, after in watched]
        )
        for row in rows:
            self.delivery.deliver(stored_message_from_row(row))
        self.caught_up += len(rows)
        return len(rows)
