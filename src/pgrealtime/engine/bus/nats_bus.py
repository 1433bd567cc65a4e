"""The `engine/bus/base.Bus` over NATS (`--broker nats://...`): stored messages travel
between processes as bytes, so no process reads another's publish back from PostgreSQL.

- Publishing: after a batch is stored and fanned out here, the publisher hands it to
  `publish_stored` (one NATS message per batch, subject `pgrt.<cluster>.messages`,
  msgpack: origin + every message's columns). Every process subscribes to that one
  subject and hands the messages of other origins to its `Ordering`. One subject, not
  one per channel: a batch holds many channels, so per-channel subjects would cost one
  NATS message per stored message instead of one per batch, plus a subscription per
  channel and a window in which a new subscription's first messages are missed; a
  process drops the messages of channels nobody here watches in `Ordering` at the
  cost of a decode. Measured with nats-py on the 2-core test VM, sending and receiving
  20,000 messages of 100 channels: 6.8 µs of client CPU per message one by one on
  per-channel subjects, 1.3 µs in batches of 100 on one subject. Per-channel
  interest pays off only when processes watch disjoint channel sets.
- Exactly once, in order: `Ordering` drops positions it has handed out and reads a
  gap in positions from `realtime.messages`, as for a resume. So a NATS message that
  is lost, late or twice is harmless.
- Outage: while NATS is unreachable `connected` is clear (`/health`: degraded, with
  the reason), publishes are still stored and fanned out here. On reconnecting, a
  process reads from PostgreSQL what its watched channels missed, then publishes a
  `pgrt.<cluster>.resync` notice on which every process does the same, so what this
  one stored meanwhile reaches the others.
- SQL `realtime.publish()`: read once per cluster. The process elected for it (an
  advisory lock, engine/bus/pg_leader) LISTENs for notices of SQL origin, reads the
  rows, fans them out and publishes them on NATS; on taking over it sends a resync.
- Channel changes: each process keeps PostgreSQL's channels-changed NOTIFY (rare).

`<cluster>` is derived from the database (its system identifier and name when the
role may read them, else the name), so processes of every machine naming the same
broker and database form one cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import msgspec

from pgrealtime.engine.bus.base import BusSink
from pgrealtime.engine.bus.pg_leader import PgLeadership
from pgrealtime.engine.bus.pg_notify import CATCH_UP_SQL, Listener
from pgrealtime.engine.messages import SELECT_MESSAGES, StoredMessage, stored_message_from_row

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0

# (id, channel, channel_id, event, payload_json, sender_type, sender_id, created_at,
#  seq, position)
_Row = tuple[str, str, str | None, str, bytes, str, str | None, datetime, int, int]


class _Batch(msgspec.Struct, array_like=True):
    origin: str
    messages: list[_Row]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Batch)


def encode_batch(origin: str, messages: list[StoredMessage]) -> bytes:
    return _encoder.encode(
        _Batch(
            origin,
            [
                (m.id, m.channel, m.channel_id, m.event, m.payload_json, m.sender_type,
                 m.sender_id, m.created_at, m.seq, m.position)
                for m in messages
            ],
        )
    )  # fmt: skip


def decode_batch(data: bytes) -> tuple[str, list[StoredMessage]]:
    batch = _decoder.decode(data)
    return batch.origin, [StoredMessage(*row) for row in batch.messages]


async def cluster_name(conn: asyncpg.Connection) -> str:
    """A short name for the database, the same from every machine."""
    name = await conn.fetchval("SELECT current_database()")
    with contextlib.suppress(asyncpg.PostgresError):
        system = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
        name = f"{system}/{name}"
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def _bytes_to(on_message: Callable[[bytes], None]) -> Callable[[object], Awaitable[None]]:
    async def callback(msg: object) -> None:
        on_message(msg.data)  # type: ignore[attr-defined]

    return callback


class _Republish:
    """The SQL listener's sink: fan out here and publish on NATS."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus

    def deliver(self, message: StoredMessage) -> object:
        self.bus.delivery.deliver(message)
        self.bus.publish_stored([message])
        return None

    def tracked(self) -> list[tuple[str, int]]:
        return self.bus.delivery.tracked()


class NatsBus:
    """See the module docstring. `servers`: NATS URLs (one cluster's, any of them)."""

    def __init__(
        self,
        servers: list[str],
        url: str,
        pool: asyncpg.Pool,
        delivery: BusSink,
        origin: str,
        on_channels_changed: Callable[[], None] | None = None,
    ) -> None:
        self.servers = servers
        self.url = url
        self.pool = pool
        self.delivery = delivery
        self.origin = origin
        self.connected = asyncio.Event()
        self.reason: str | None = "not connected yet"
        self.subject = ""
        self.resync_subject = ""
        self.received = 0  # batches from other processes
        self.published = 0  # batches sent
        self.resyncs = 0  # catch-ups from PostgreSQL
        self.dropped = 0  # batches not sent: NATS was not connected
        self._nc = None  # nats.aio.client.Client once connected
        self._outbox: list[tuple[str, bytes]] = []  # (subject, data)
        # other streams riding on the bus: name -> (on_message, on_catch_up)
        self._streams: dict[str, tuple[Callable[[bytes], None], Callable[[], None]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._channels = Listener(url, delivery, origin, on_channels_changed, messages=False)
        self._sql = Listener(url, _Republish(self), origin, only_origin="")
        self._sql_running = False
        self.leadership: PgLeadership | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        self._channels.start()
        self._tasks.append(asyncio.create_task(self._run(), name="nats-bus"))

    async def stop(self) -> None:
        if self.leadership is not None:
            await self.leadership.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None and self.connected.is_set():  # the last words (presence's
            outbox, self._outbox = self._outbox, []  # goodbye), flushed by the drain
            with contextlib.suppress(Exception):
                for subject, data in outbox:
                    await self._nc.publish(subject, data)
        await self._channels.stop()
        await self._sql.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.drain(), 2)
        self.connected.clear()

    def describe(self) -> dict[str, object]:
        return {
            "kind": "nats",
            "connected": self.connected.is_set(),
            "reason": self.reason,
            "servers": len(self.servers),
            "batches_sent": self.published,
            "batches_received": self.received,
            "resyncs": self.resyncs,
            "batches_not_sent": self.dropped,
            "reads_sql_publishes": self._sql_running,
        }

    def describe_cluster(self) -> dict[str, object]:
        """The members and the SQL-publish reader, for /health (see pg_leader)."""
        return {} if self.leadership is None else self.leadership.describe()

    def problem(self) -> str | None:
        """Why the bus is degraded, for anyone asking /health (None when it is not);
        the error itself (with addresses) is in `describe`, for admins."""
        return None if self.connected.is_set() else "message bus (NATS) not connected"

    # -- sending --------------------------------------------------------------
    def publish_stored(self, messages: list[StoredMessage]) -> None:
        """A batch stored (and fanned out) here: to every other process."""
        self._enqueue(self.subject, encode_batch(self.origin, messages))

    def _enqueue(self, subject: str, data: bytes) -> None:
        """Queue for sending; dropped while NATS is not connected (the others catch up
        from PostgreSQL when it is back: see `_reconnected`), so nothing piles up."""
        if not self.connected.is_set():
            self.dropped += 1
            return
        self._outbox.append((subject, data))
        self._wake.set()

    def stream(
        self, name: str, on_message: Callable[[bytes], None], on_catch_up: Callable[[], None]
    ) -> Callable[[bytes], None]:
        """Another kind of traffic on the bus (the change relay; presence next): every
        process's `on_message` gets the bytes any process sends with the returned
        function, on subject `pgrt.<cluster>.<name>` (a process gets its own too).
        At-most-once like any NATS message: `on_catch_up` runs when a process may have
        missed some (it reconnected, or another one did) and must read what it missed
        from its source of truth. Register before `start`."""
        self._streams[name] = (on_message, on_catch_up)

        def send(data: bytes) -> None:
            self._enqueue(self.subject.rpartition(".")[0] + "." + name, data)

        return send

    def deliver_own(self, message_ids: list[str]) -> None:
        """Publishes whose reply was lost: if they were stored, fan them out here and
        send them on (nobody else would: NATS never heard of them)."""
        task = asyncio.create_task(self._read_own(message_ids))
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _read_own(self, message_ids: list[str]) -> None:
        for _ in range(30):
            try:
                rows = await self.pool.fetch(
                    SELECT_MESSAGES + " WHERE id = ANY($1::uuid[]) ORDER BY position",
                    message_ids,
                )
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(RETRY_SECONDS)
        else:
            return
        messages = [stored_message_from_row(row) for row in rows]
        for message in messages:
            self.delivery.deliver(message)
        if messages:
            self.publish_stored(messages)

    # -- the connection -------------------------------------------------------
    async def _run(self) -> None:
        import nats  # the optional dependency, only with --broker

        while True:  # the database may be down at start: the bus waits for it
            try:
                async with self.pool.acquire() as conn:
                    name = await cluster_name(conn)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.reason = f"database: {type(exc).__name__}: {exc}"
                await asyncio.sleep(RETRY_SECONDS)
        self.subject = f"pgrt.{name}.messages"
        self.resync_subject = f"pgrt.{name}.resync"
        self.leadership = PgLeadership(
            self.url, self.origin, f"sql-publishes:{name}", self._elected, self._deposed
        )
        await self.leadership.start()
        while self._nc is None:
            try:
                self._nc = await nats.connect(
                    self.servers,
                    name=f"pgrealtime {self.leadership.name}",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                )
            except Exception as exc:  # unreachable at start: keep serving, keep trying
                self.reason = f"{type(exc).__name__}: {exc}"
                log.warning("message bus: cannot connect to NATS: %s", self.reason)
                await asyncio.sleep(RETRY_SECONDS)
        await self._nc.subscribe(self.subject, cb=self._on_batch)
        await self._nc.subscribe(self.resync_subject, cb=self._on_resync)
        for stream, (on_message, _) in self._streams.items():
            await self._nc.subscribe(f"pgrt.{name}.{stream}", cb=_bytes_to(on_message))
        await self._nc.flush()
        # NATS may have come late: read what the others stored meanwhile (their
        # resync may have gone out before this process listened), and have them
        # read what this one stored
        await self._catch_up()
        if self.dropped:
            await self._nc.publish(self.resync_subject, self.origin.encode())
        self.reason = None
        self.connected.set()
        await self._send_loop()

    async def _send_loop(self) -> None:
        assert self._nc is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            outbox, self._outbox = self._outbox, []
            for subject, data in outbox:
                try:
                    await self._nc.publish(subject, data)
                    self.published += 1
                except Exception as exc:  # lost: the others fill the gap from PostgreSQL
                    self.dropped += 1
                    if self.connected.is_set():
                        log.warning("message bus: a batch was not sent: %s", exc)

    async def _disconnected(self) -> None:
        if self.connected.is_set():
            log.warning("message bus: NATS connection lost")
        self.reason = "connection lost; reconnecting"
        self.connected.clear()

    async def _reconnected(self) -> None:
        await self._catch_up()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.publish(self.resync_subject, self.origin.encode())
        self.reason = None
        self.connected.set()
        log.info("message bus: NATS reconnected")

    async def _error(self, exc: Exception) -> None:
        self.reason = f"{type(exc).__name__}: {exc}"

    # -- receiving ------------------------------------------------------------
    async def _on_batch(self, msg: object) -> None:
        origin, messages = decode_batch(msg.data)  # type: ignore[attr-defined]
        if origin == self.origin:
            return
        self.received += 1
        for message in messages:
            self.delivery.deliver(message)

    async def _on_resync(self, msg: object) -> None:
        if msg.data.decode() != self.origin:  # type: ignore[attr-defined]
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Everything past what each watched channel has seen here, from PostgreSQL."""
        for _, on_catch_up in self._streams.values():
            on_catch_up()
        watched = self.delivery.tracked()
        self.resyncs += 1
        if not watched:
            return
        for _ in range(30):
            try:
                rows = await self.pool.fetch(
                    CATCH_UP_SQL,
                    [channel for channel, _ in watched],
                    [after for _, after in watched],
                )
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(RETRY_SECONDS)
        else:
            return
        for row in rows:
            self.delivery.deliver(stored_message_from_row(row))

    # -- SQL publishes, read by one process -----------------------------------
    async def _elected(self) -> None:
        self._sql.start()
        self._sql_running = True
        if self._nc is not None and self.connected.is_set():
            await self._nc.publish(self.resync_subject, b"")  # what came meanwhile
        await self._catch_up()

    async def _deposed(self) -> None:
        self._sql_running = False
        await self._sql.stop()
