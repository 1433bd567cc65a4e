"""Store and policy-check publishes in batches, then fan them out.

Each publish is an INSERT under the caller's role (RLS WITH CHECK decides). Publishes
queue up in a few lanes (by channel, so one channel's messages stay in order); a lane
sends everything queued in one round trip to `realtime.publish_items`
(db/functions/publish_items.sql), so the cost of a round trip is shared under load and
a lone publish waits for no one.

Where the CPU goes (see docs/performance.md): PostgreSQL's per-item work dominates, so
the batch travels as one jsonb parameter (no per-element array encoding here), the SQL
side does as little per item as the rules allow, and each lane keeps its own connection
for the server's life (no pool acquire/release per batch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from pgrealtime.auth.principal import Principal
from pgrealtime.config import DEFAULT_PUBLISH_BATCH_BYTES
from pgrealtime.db import errors as db_errors
from pgrealtime.engine.batching import drain_in_batches
from pgrealtime.engine.messages import StoredMessage
from pgrealtime.engine.ordering import Ordering

log = logging.getLogger(__name__)

PUBLISH_ITEMS_SQL = (
    "SELECT idx, status, channel_id, created_at, seq, position, detail"
    " FROM realtime.publish_items($1::jsonb, $2::text)"
)

# Bytes of encoded items one batch carries at most: the batch travels as one jsonb
# value, and jsonb cannot exceed 255 MiB (with no cap, 256 publishes of 1 MiB on one
# lane failed together). An item larger than the cap goes alone.
DEFAULT_MAX_BATCH_BYTES = DEFAULT_PUBLISH_BATCH_BYTES  # 8 MiB
# Per item, beyond payload, claims, channel and event: keys, id, role, sender.
ITEM_OVERHEAD_BYTES = 160

CONNECT_TIMEOUT_SECONDS = 5.0  # an unreachable database is an error soon, not a hang
COMMAND_TIMEOUT_SECONDS = 30.0

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class PublishRefused(Exception):
    """The message was not stored: `status` is 'no_channel', 'denied' (the policies),
    'unavailable' (a transient database error: retry) or 'failed' (another database
    error, e.g. an application trigger). `detail` is 'SQLSTATE: message'."""

    def __init__(self, status: str, detail: str | None = None) -> None:
        super().__init__(detail or status)
        self.status = status
        self.detail = detail

    @property
    def sqlstate(self) -> str:
        return (self.detail or "").partition(":")[0] or "unknown"


class DatabaseUnavailable(asyncpg.InterfaceError):
    """The lane has no working connection (the session answers SERVICE_UNAVAILABLE:
    an InterfaceError is one of its 'database unavailable' errors)."""


@dataclass(slots=True)
class _Item:
    principal: Principal
    channel: str
    event: str
    payload_json: bytes
    future: asyncio.Future[StoredMessage]
    size: int  # about what the item adds to the encoded batch
    id: str = ""
    source: str = "websocket"  # who asked: the protocol's name (a metrics label)


def _item_size(item: _Item) -> int:
    return item.size


def _reply_lost(exc: Exception) -> bool:
    """Whether a batch that failed with `exc` may have been stored anyway: the server
    answered with an error (nothing stored) unless the connection itself failed."""
    return not isinstance(exc, asyncpg.PostgresError) or isinstance(
        exc, asyncpg.PostgresConnectionError
    )


def new_message_ids(count: int) -> list[str]:
    """Random (version 4) UUIDs as text: one urandom read for the whole batch, and
    PostgreSQL's gen_random_uuid() opens /dev/urandom on every call."""
    h = os.urandom(16 * count).hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
        f"{'89ab'[int(h[i + 16], 16) & 3]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def encode_batch(batch: list[_Item]) -> str:
    """The batch as the jsonb array realtime.publish_items unpacks (payloads and
    claims are already JSON: they are embedded, not re-encoded)."""
    return orjson.dumps(
        [
            {
                "i": item.id,
                "r": item.principal.role,
                "c": item.principal.claims_json,
                "n": item.channel,
                "e": item.event,
                "p": orjson.Fragment(item.payload_json),
                "s": item.principal.user_id,
            }
            for item in batch
        ]
    ).decode()


class Publisher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        delivery: Ordering,
        origin: str,
        lanes: int = 4,
        max_batch: int = 500,
        dsn: str | None = None,
        connect: Connect | None = None,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        """`dsn` (or a `connect` factory): each lane keeps its own connection, opened
        on first use and again after a failure. Without either, every batch borrows
        a connection from `pool`. `max_batch_bytes`: see DEFAULT_MAX_BATCH_BYTES."""
        self.pool = pool
        self.delivery = delivery
        self.origin = origin
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        if connect is None and dsn is not None:
            connect = self._connect_factory(dsn)
        self._connect = connect
        self._queues: list[deque[_Item]] = [deque() for _ in range(lanes)]
        self._running: list[bool] = [False] * lanes
        self._conns: list[asyncpg.Connection | None] = [None] * lanes
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        # Called with the ids of a batch that may have been stored without this process
        # knowing (the connection failed before the reply came): someone must fan them
        # out (the listener, see Listener.deliver_own).
        self.on_lost_reply: Callable[[list[str]], None] | None = None
        # Called once per stored batch with its messages, after the local fan-out, when
        # a bus carries them to the other processes (engine/bus/nats.py); None when
        # PostgreSQL's NOTIFY does (the trigger sends it inside the transaction).
        self.on_stored: Callable[[list[StoredMessage]], None] | None = None
        # Publishes queued and not yet answered: shutdown waits for them to be
        # stored, fanned out and acked before it closes connections.
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # For metrics and the dashboard: messages stored by source, refusals by status
        # ('unavailable' or 'error' too when a whole batch failed), a hook told each
        # batch's size and time.
        self.published: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.observe_batch: Callable[[int, float], None] | None = None

    @staticmethod
    def _connect_factory(dsn: str) -> Connect:
        def connect() -> Awaitable[asyncpg.Connection]:
            return asyncpg.connect(
                dsn,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings={"application_name": "pgrealtime publisher"},
            )

        return connect

    def publish(
        self,
        principal: Principal,
        channel: str,
        event: str,
        payload: dict[str, Any],
        source: str = "websocket",
    ) -> asyncio.Future[StoredMessage]:
        """Queue a publish; the future gives the stored message (after it is fanned
        out) or raises PublishRefused. A future rather than a coroutine: awaiting it is
        the same, and no coroutine (or task around it) is made per publish."""
        try:
            payload_json = orjson.dumps(payload)
        except TypeError as exc:  # orjson.JSONEncodeError; the caller sees it on await
            future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future
        return self.publish_json(principal, channel, event, payload_json, source)

    def publish_json(
        self,
        principal: Principal,
        channel: str,
        event: str,
        payload_json: bytes,
        source: str = "websocket",
    ) -> asyncio.Future[StoredMessage]:
        """publish() with the payload already encoded as a JSON object. `source` names
        the protocol the publish came through (the metrics' label)."""
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self.in_flight += 1
        self._idle.clear()
        future.add_done_callback(self._settled)
        lane = zlib.crc32(channel.encode()) % len(self._queues)
        size = (
            len(payload_json)
            + len(principal.claims_json)
            + len(channel)
            + len(event)
            + ITEM_OVERHEAD_BYTES
        )
        item = _Item(principal, channel, event, payload_json, future, size, "", source)
        self._queues[lane].append(item)
        if not self._running[lane]:
            self._running[lane] = True
            task = asyncio.create_task(self._drain(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    def _settled(self, _future: asyncio.Future) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def drained(self) -> None:
        """Return when no publish is in flight and every reply is queued."""
        await self._idle.wait()
        # Callbacks run in the order they were added: the caller's (which queues the
        # reply) was added after ours, and runs before this wakes. One more tick is
        # a margin for callers that add theirs later.
        await asyncio.sleep(0)

    async def start(self) -> None:
        """Open every lane's connection now, so the first publishes do not wait for a
        connect; a lane that cannot connect tries again on its next batch."""
        if self._connect is None:
            return
        results = await asyncio.gather(
            *(self._lane_connection(lane) for lane in range(len(self._conns))),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("publish lane not connected yet: %s", result)

    async def close(self) -> None:
        """Close the lanes' connections (publishes still queued fail as unavailable)."""
        self._closed = True
        for lane, conn in enumerate(self._conns):
            self._conns[lane] = None
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), 2.0)
                except db_errors.FAILED:
                    conn.terminate()

    async def _drain(self, lane: int) -> None:
        async def round_trip(batch: list[_Item]) -> None:
            for item, message_id in zip(batch, new_message_ids(len(batch)), strict=True):
                item.id = message_id
            started = time.perf_counter()
            try:
                rows = await self._store(lane, encode_batch(batch))
            except Exception as exc:
                failed = "unavailable" if isinstance(exc, db_errors.UNAVAILABLE) else "error"
                self.refused[failed] += len(batch)
                if self.on_lost_reply is not None and _reply_lost(exc):
                    self.on_lost_reply([item.id for item in batch])
                raise
            if self.observe_batch is not None:
                self.observe_batch(len(batch), time.perf_counter() - started)
            self._settle(batch, rows)

        try:
            await drain_in_batches(
                self._queues[lane], self.max_batch, round_trip, self.max_batch_bytes, _item_size
            )
        finally:
            self._running[lane] = False

    async def _store(self, lane: int, body: str) -> list[asyncpg.Record]:
        if self._connect is None:
            return await self.pool.fetch(PUBLISH_ITEMS_SQL, body, self.origin)
        conn = await self._lane_connection(lane)
        try:
            return await conn.fetch(PUBLISH_ITEMS_SQL, body, self.origin)
        except db_errors.UNAVAILABLE:  # the lane's connection cannot be trusted
            self._drop(lane, conn)
            raise
        except Exception as exc:
            if conn.is_closed():  # e.g. the server shut down while we waited
                self._drop(lane, conn)
                raise DatabaseUnavailable(f"database connection lost: {exc}") from exc
            raise

    async def _lane_connection(self, lane: int) -> asyncpg.Connection:
        """The lane's connection, or a new one if it was lost. No backoff: a batch
        waits for at most one connect attempt, and during an outage that attempt
        fails at once (or within the connect timeout), like the pool's would."""
        conn = self._conns[lane]
        if conn is not None and not conn.is_closed():
            return conn
        if self._closed:
            raise DatabaseUnavailable("the publisher is closed")
        assert self._connect is not None
        conn = await self._connect()
        current = self._conns[lane]
        if self._closed or (current is not None and not current.is_closed()):
            await conn.close()  # closed meanwhile, or another caller connected first
            if self._closed or current is None:
                raise DatabaseUnavailable("the publisher is closed")
            return current
        self._conns[lane] = conn
        return conn

    def _drop(self, lane: int, conn: asyncpg.Connection) -> None:
        if self._conns[lane] is conn:
            self._conns[lane] = None
        if not conn.is_closed():
            conn.terminate()

    def _settle(self, batch: list[_Item], rows: list[asyncpg.Record]) -> None:
        """Fan out what was stored, in order, then answer each publisher."""
        stored: list[StoredMessage] | None = None if self.on_stored is None else []
        for idx, status, channel_id, created_at, seq, position, detail in rows:
            item = batch[idx - 1]
            if status != "ok":
                self.refused[status] += 1
                if not item.future.done():
                    item.future.set_exception(PublishRefused(status, detail))
                continue
            message = StoredMessage(
                id=item.id,
                channel=item.channel,
                channel_id=channel_id,
                event=item.event,
                payload_json=item.payload_json,
                sender_type="user",
                sender_id=item.principal.user_id,
                created_at=created_at,
                seq=seq,
                position=position,
            )
            self.published[item.source] += 1
            self.delivery.deliver(message)
            if stored is not None:
                stored.append(message)
            if not item.future.done():
                item.future.set_result(message)
        if stored and self.on_stored is not None:
            self.on_stored(stored)
