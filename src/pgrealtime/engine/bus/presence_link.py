"""How cluster presence (engine/presence_cluster.py) travels between processes.

Two links, one shape: the store's `send` gets bytes out in order (or drops them while
the link is down), everything that arrives goes to the store's `receive`, and each
time the link is (re)established the store's `connected` runs, because anything may
have been missed both ways meanwhile.

- `over_nats`: the NatsBus stream `presence` (subject `pgrt.<cluster>.presence`).
- `PgPresenceLink`: without a broker, NOTIFY `realtime_presence` on one connection of
  its own, which also LISTENs (PostgreSQL delivers a session's notifications in commit
  order, so one connection keeps one process's messages in order). NOTIFY carries at
  most 8000 bytes: the store splits its messages under `MAX_NOTIFY_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import asyncpg

from pgrealtime.db.dedicated import close_quietly, wake_or_lost
from pgrealtime.engine.bus.nats_bus import NatsBus
from pgrealtime.engine.presence_cluster import ClusterPresenceStore

log = logging.getLogger(__name__)

CHANNEL = "realtime_presence"
MAX_NOTIFY_BYTES = 7000  # under NOTIFY's 8000, with room for the envelope
MAX_NATS_BYTES = 256 * 1024  # under NATS's default max_payload of 1 MB


def over_nats(store: ClusterPresenceStore, bus: NatsBus) -> None:
    """Presence on the NATS bus. Register before `bus.start()`."""
    tasks: set[asyncio.Task] = set()

    async def when_connected() -> None:
        await bus.connected.wait()  # catch-up runs just before the bus sends again
        store.connected()

    def on_catch_up() -> None:
        task = asyncio.create_task(when_connected())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    send = bus.stream("presence", store.receive, on_catch_up)

    def send_connected(data: bytes) -> None:
        if bus.connected.is_set():  # else dropped here, not counted as a lost batch
            send(data)

    store.send = send_connected
    store.max_message_bytes = MAX_NATS_BYTES


class PgPresenceLink:
    """Presence over LISTEN/NOTIFY; see the module docstring."""

    def __init__(self, url: str, store: ClusterPresenceStore) -> None:
        self.url = url
        self.store = store
        self.connected = asyncio.Event()
        self._queue: list[str] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # the queue was emptied (stop waits for it)
        self._task: asyncio.Task | None = None
        self.dropped = 0  # messages not sent: the connection was down
        store.send = self._send
        store.max_message_bytes = MAX_NOTIFY_BYTES

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-link")

    async def stop(self) -> None:
        """Send what is queued (the goodbye) for up to a second, then close."""
        if self._queue and self.connected.is_set():
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    def _send(self, data: bytes) -> None:
        if not self.connected.is_set() or len(data) >= 8000:  # NOTIFY would refuse it
            self.dropped += 1
            return
        self._queue.append(data.decode())
        self._wake.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.store.receive(payload.encode())

    async def _run(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                name = f"pgrealtime presence {self.store.origin[:8]}"  # for operators
                conn = await asyncpg.connect(self.url, server_settings={"application_name": name})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._queue.clear()
                self.connected.set()
                delay = 0.2
                self.store.connected()
                await self._send_loop(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("presence link: connection lost: %s", exc)
            finally:
                self.connected.clear()
                if conn is not None:
                    await close_quietly(conn)
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, 5.0)

    async def _send_loop(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await wake_or_lost(self._wake, lost)
            while self._queue and not lost.is_set():
                # one NOTIFY each (a transaction's equal payloads would be merged),
                # taken off the queue once sent, so stop() can wait for it to empty
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, self._queue[0])
                self._queue.pop(0)
            self._drained.set()
        raise ConnectionError("presence link connection terminated")
