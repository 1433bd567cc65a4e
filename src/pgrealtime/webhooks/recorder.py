"""Writing successful outcomes in batches.

Recording each delivered attempt with its own statement cost a database round trip
per delivery, a quarter of the worker's time. Outcomes that finish close together are
written by one call instead (`store.mark_delivered_many`): the first waits `delay`
seconds for company, and whatever finishes while a write is running goes in the next
one. The caller waits until its outcome is written, so a finished delivery task means
a recorded delivery.

A crash between the request and the write only loses the record, never the delivery:
the row keeps its lease, becomes due again when the lease runs out and is sent again
(at least once; receivers drop repeats by the delivery id header).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from pgrealtime.webhooks import store

DEFAULT_DELAY = 0.003
DEFAULT_MAX_BATCH = 256
WRITE_TRIES = 3

_Item = tuple[uuid.UUID, uuid.UUID, int, "asyncio.Future[None]"]


class KeptConnection:
    """A pooled connection kept for a worker's frequent statements. Giving one back to
    the pool after each statement costs another round trip (the pool's reset query);
    a kept one is given back only after an error, or at close."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        teardown: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._setup = setup
        self._teardown = teardown
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        """The kept connection, acquired (and set up) when there is none."""
        if self._conn is not None and self._conn.is_closed():
            await self.drop()
        if self._conn is None:
            conn = await self._pool.acquire()
            try:
                if self._setup is not None:
                    await self._setup(conn)
            except BaseException:
                await self._give_back(conn)
                raise
            self._conn = conn
        return self._conn

    async def drop(self) -> None:
        """Give the connection back (after an error: the next get() takes a fresh one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._give_back(conn)

    async def _give_back(self, conn: asyncpg.Connection) -> None:
        """Undo the setup and release: always released, whatever the teardown does, so
        the pool never loses a connection. One whose teardown failed may still carry
        the setup's state (a LISTEN): it is closed, not handed to another user."""
        try:
            if self._teardown is not None:
                try:
                    await self._teardown(conn)
                except BaseException as exc:
                    with contextlib.suppress(Exception):  # (the pool may hold it already)
                        conn.terminate()
                    if not isinstance(exc, Exception):
                        raise  # cancelled: still released (below), then cancelled
        finally:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)


class DeliveredRecorder:
    """Batches 'delivered' outcomes of one worker into few statements."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        delay: float = DEFAULT_DELAY,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._conn = KeptConnection(pool)
        self._delay = delay
        self._max_batch = max(1, max_batch)
        self._items: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # writes so far, for tests and profiling
        self.recorded = 0

    async def delivered(self, delivery_id: uuid.UUID, token: uuid.UUID, status_code: int) -> None:
        """Record one delivered attempt; returns once it is written (raises the
        database error when the write failed). Cancelling the caller does not take the
        outcome back: it is still written with its batch."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.append((delivery_id, token, status_code, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush(), name="webhook-record")
        await future

    async def close(self) -> None:
        """Write everything still queued (at shutdown, before claims are released)."""
        while self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._conn.drop()

    async def _flush(self) -> None:
        try:
            while self._items:
                if self._delay > 0 and len(self._items) < self._max_batch:
                    await asyncio.sleep(self._delay)
                batch = self._items[: self._max_batch]
                del self._items[: len(batch)]
                try:
                    await self._write(batch)
                except Exception as exc:  # each waiter logs it; the leases bring them back
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for *_, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._task = None

    async def _write(self, batch: list[_Item]) -> None:
        outcomes = [(delivery_id, token, code) for delivery_id, token, code, _ in batch]
        for attempt in range(WRITE_TRIES):
            try:
                conn = await self._conn.get()
                self.recorded += await store.mark_delivered_many(conn, outcomes)
                self.batches += 1
                return
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                # rows of a stale claim locked by another process: nothing was written
                if attempt == WRITE_TRIES - 1:
                    raise
            except BaseException:
                await self._conn.drop()
                raise
