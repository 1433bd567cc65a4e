"""The change feed as the server sees it: start, stop, status, and one callback.

    feed = ChangeFeed(dsn, slot=settings.replication_slot,
                      publication=settings.publication, on_batch=route_changes)
    await feed.start()      # never raises for a database that cannot replicate:
    feed.status()           # {"enabled": False, "reason": "...wal_level=logical..."}
    await feed.stop()

The publication starts empty; `visibility.authorize_subscription` adds each table when
it is first subscribed to, and it stays published (across restarts too).

`on_batch(changes)` runs on the event loop, one batch at a time, in commit order.
When it returns, the batch counts as handed to subscribers and its WAL position may
be confirmed to PostgreSQL; if it raises, the batch (and anything after it) is read
again from the slot. So `on_batch` must only return once the frames are written (or
queued) to the subscribers' connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pgrealtime.changes.model import RowChange
from pgrealtime.changes.pgoutput import lsn_to_str
from pgrealtime.changes.reader import (
    Batch,
    FeedDisabled,
    ReaderConfig,
    ReplicationReader,
    drop_slot,
    prepare,
)
from pgrealtime.changes.visibility import Database

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[RowChange]], Awaitable[None]]


class ChangeFeed:
    """Committed row changes from a logical replication slot, delivered to `on_batch`."""

    def __init__(
        self,
        dsn: str,
        *,
        slot: str = "pgrealtime",
        publication: str = "pgrealtime",
        on_batch: BatchHandler | None = None,
        excluded_schemas: frozenset[str] = frozenset({"realtime"}),
        max_batch_changes: int = 1000,
        max_in_flight: int = 8,
    ) -> None:
        self.config = ReaderConfig(
            dsn=dsn,
            slot=slot,
            publication=publication,
            excluded_schemas=excluded_schemas,
            max_batch_changes=max_batch_changes,
            max_in_flight=max_in_flight,
        )
        self._handler = on_batch
        self._reader: ReplicationReader | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Batch] | None = None
        self._failed_generation = 0
        self._disabled_reason: str | None = None
        self.tables_without_identity: list[str] = []
        self.publication_all_tables = False
        self.delivered_batches = 0
        self.delivered_changes = 0

    def on_batch(self, handler: BatchHandler) -> None:
        """Register the server's delivery callback (before `start`)."""
        self._handler = handler

    @property
    def running(self) -> bool:
        return self._reader is not None

    async def start(self) -> None:
        """Create the publication and slot if missing and start reading. If the database
        cannot do logical replication, log why and stay disabled (status says so)."""
        if self._reader is not None:
            return
        if self._handler is None:
            raise RuntimeError("ChangeFeed.start: register on_batch first")
        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(None, prepare, self.config)
        except FeedDisabled as exc:
            self._disabled_reason = exc.reason
            log.warning("change notifications disabled: %s", exc.reason)
            return
        self.publication_all_tables = prepared.all_tables
        self.tables_without_identity = prepared.without_identity
        if prepared.all_tables:
            # Left as it is: it may be what someone else's subscription reads, and
            # dropping it here would lose what they have not read yet.
            log.warning(
                "publication %s is FOR ALL TABLES (made by an earlier pgrealtime): "
                "PostgreSQL refuses UPDATE and DELETE on every table without a primary "
                "key%s. pgrealtime now publishes only the tables clients subscribe to; "
                'to switch, stop it and run in ONE transaction: BEGIN; DROP PUBLICATION "%s"; '
                'CREATE PUBLICATION "%s" WITH (publish_via_partition_root = true); COMMIT;',
                self.config.publication,
                f" (now: {', '.join(prepared.without_identity)})"
                if prepared.without_identity
                else "",
                self.config.publication,
                self.config.publication,
            )
        elif prepared.without_identity:
            log.warning(
                "tables in publication %s have no primary key or replica identity, so "
                "PostgreSQL refuses UPDATE and DELETE on them: %s. Add a primary key, run "
                "ALTER TABLE ... REPLICA IDENTITY FULL, or ALTER PUBLICATION %s DROP TABLE ...",
                self.config.publication,
                ", ".join(prepared.without_identity),
                self.config.publication,
            )
        self._disabled_reason = None
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._queue = queue

        def submit(batch: Batch) -> None:  # called on the reader thread
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(queue.put_nowait, batch)

        reader = ReplicationReader(self.config, submit)
        self._reader = reader
        self._consumer = asyncio.create_task(self._consume(reader, queue), name="change-feed")
        reader.start()

    async def stop(self) -> None:
        """Stop reading. What was acknowledged is confirmed to PostgreSQL; anything in
        flight is delivered again by the next start."""
        reader, consumer = self._reader, self._consumer
        self._reader = self._consumer = self._queue = None
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        if reader is not None:
            await asyncio.get_running_loop().run_in_executor(None, reader.stop)
            reader.close()

    async def drop_slot(self) -> bool:
        """Stop and drop the replication slot (it keeps WAL on the server until dropped).
        For tests and for turning change notifications off for good."""
        await self.stop()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, drop_slot, self.config.dsn, self.config.slot)

    def status(self) -> dict[str, Any]:
        """For the health route: enabled, reason, slot, lag_bytes (and a few more)."""
        reader = self._reader
        if reader is None:
            return {
                "enabled": False,
                "reason": self._disabled_reason or "not started",
                "state": "disabled" if self._disabled_reason else "stopped",
                "slot": self.config.slot,
                "publication": self.config.publication,
                "lag_bytes": None,
            }
        return {
            "enabled": True,
            "reason": reader.reason,
            "state": reader.state,
            "slot": self.config.slot,
            "publication": self.config.publication,
            "lag_bytes": reader.lag_bytes,
            "confirmed_lsn": lsn_to_str(reader.confirmed_lsn),
            "delivered_batches": self.delivered_batches,
            "delivered_changes": self.delivered_changes,
            "toast_lookups": reader.toast_lookups,
            "publication_all_tables": self.publication_all_tables,
            "tables_without_replica_identity": self.tables_without_identity,
        }

    async def _consume(self, reader: ReplicationReader, queue: asyncio.Queue[Batch]) -> None:
        assert self._handler is not None
        while True:
            batch = await queue.get()
            if batch.generation <= self._failed_generation:
                continue  # after a failed delivery: the reader re-reads these
            try:
                await self._handler(batch.changes)
            except Exception:
                log.exception(
                    "change feed: delivering a batch up to %s failed; it will be read again",
                    lsn_to_str(batch.end_lsn),
                )
                self._failed_generation = batch.generation
                reader.request_reconnect(batch.generation)
                continue
            self.delivered_batches += 1
            self.delivered_changes += len(batch.changes)
            reader.ack(batch.generation, batch.seq)


def _quote_ident(name: str) -> str:
    if not name or "\x00" in name:
        raise ValueError(f"invalid identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


async def set_replica_identity_full(
    db: Database | Any, schema: str, table: str, *, full: bool = True
) -> None:
    """ALTER TABLE ... REPLICA IDENTITY FULL (or back to DEFAULT).

    With FULL, UPDATE and DELETE changes carry the whole old row in `old` instead of
    only the key, at the cost of more WAL. `db` is an asyncpg Pool or Connection.
    Raises LookupError when the table does not exist."""
    exists = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))",
        schema,
        table,
    )
    if not exists:
        raise LookupError(f"table {schema}.{table} does not exist")
    identity = "FULL" if full else "DEFAULT"
    await db.execute(
        f"ALTER TABLE {_quote_ident(schema)}.{_quote_ident(table)} REPLICA IDENTITY {identity}"
    )
