"""The change feed as the server sees it: start, stop, status, and one callback.

    feed = ChangeFeed(dsn, FeedSettings.of(settings), on_batch=route_changes)
    await feed.start()      # never raises for a database that cannot replicate:
    feed.status()           # {"enabled": False, "reason": "...wal_level=logical..."}
    await feed.stop()

The publication starts empty; `visibility.authorize_subscription` adds each table when
it is first subscribed to, and it stays published (across restarts too).

`on_batch(changes)` runs on the event loop, one batch at a time, in commit order
(batches that queued while the previous call ran are joined into one call).
When it returns, the batch counts as handed to subscribers and its WAL position may
be confirmed to PostgreSQL; if it raises, the batch (and anything after it) is read
again from the slot. So `on_batch` must only return once the frames are written (or
queued) to the subscribers' connections.

A batch that keeps failing at the same position (not for a lost connection) is, after
`max_failures` tries, delivered change by change: the changes that still fail are
skipped (logged and counted in `status()`), the rest go out, and the feed moves on.
Without that, one bad row would stop the feed for every table and the slot would keep
WAL until the disk is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pgrealtime.changes.model import RowChange
from pgrealtime.changes.pgoutput import lsn_to_str
from pgrealtime.changes.skips import SkipCounter
from pgrealtime.changes.slot import FeedDisabled, drop_slot, prepare
from pgrealtime.changes.stream import Batch, ReaderConfig, ReplicationReader
from pgrealtime.changes.visibility import Database
from pgrealtime.config import FeedSettings
from pgrealtime.db.errors import transient

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[RowChange]], Awaitable[None]]
# The reader's longest wait between attempts. Only the slot holder elected by
# changes/cluster.py reads, so a short wait costs nothing, and a new holder whose
# predecessor's walsender still holds the slot for a moment gets it within seconds.
RECONNECT_MAX_SECONDS = 2.0


class ChangeFeed:
    """Committed row changes from a logical replication slot, delivered to `on_batch`."""

    def __init__(
        self,
        dsn: str,
        settings: FeedSettings | None = None,
        *,
        on_batch: BatchHandler | None = None,
        excluded_schemas: frozenset[str] = frozenset({"realtime"}),
        max_batch_changes: int = 1000,
        max_in_flight: int = 8,
        max_merged_changes: int = 10_000,
        reconnect_max: float = RECONNECT_MAX_SECONDS,
    ) -> None:
        settings = settings or FeedSettings()
        self.config = ReaderConfig(
            dsn=dsn,
            slot=settings.slot,
            publication=settings.publication,
            excluded_schemas=excluded_schemas,
            max_batch_changes=max_batch_changes,
            max_in_flight=max_in_flight,
            max_failures=settings.max_failures,
            reconnect_max=reconnect_max,
        )
        self._prepared = False
        self.max_merged_changes = max_merged_changes
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
        self._acked_end = 0  # end LSN of the last batch acknowledged
        # for metrics: changes the reader handed over (counted on its thread), and the
        # last batch's (commit timestamp, wall time it was handed to subscribers)
        self.decoded_changes = 0
        self.last_handover: tuple[str, float] | None = None

    def on_batch(self, handler: BatchHandler) -> None:
        """Register the server's delivery callback (before `start`)."""
        self._handler = handler

    @property
    def running(self) -> bool:
        return self._reader is not None

    @property
    def skips(self) -> SkipCounter | None:
        """Where the running reader counts what it left out (None when stopped)."""
        return None if self._reader is None else self._reader.skips

    async def start(self) -> None:
        """Create the publication and slot if missing and start reading. If the database
        cannot do logical replication, log why and stay disabled (status says so)."""
        if self._reader is not None:
            return
        if await self.prepare():
            self.start_reading()

    @property
    def prepared(self) -> bool:
        """The database can replicate and the publication and slot exist."""
        return self._prepared

    async def prepare(self) -> bool:
        """Create the publication and slot if missing, without reading: what every
        process of a cluster does, though only the elected one reads. False (logged,
        and said by `status`) when the database cannot do logical replication."""
        if self._handler is None:
            raise RuntimeError("ChangeFeed.start: register on_batch first")
        loop = asyncio.get_running_loop()
        try:
            config = self.config
            prepared = await loop.run_in_executor(
                None, prepare, config.dsn, config.slot, config.publication
            )
        except FeedDisabled as exc:
            self._disabled_reason = exc.reason
            log.warning("change notifications disabled: %s", exc.reason)
            return False
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
        self._prepared = True
        return True

    def start_reading(self) -> None:
        """Start the reader thread (after `prepare`); `stop` ends it."""
        if self._reader is not None:
            return
        loop = asyncio.get_running_loop()
        self._failed_generation = 0  # a new reader counts its generations from 1 again
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._queue = queue

        def submit(batch: Batch) -> None:  # called on the reader thread
            self.decoded_changes += len(batch.changes)
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
            **self._problems(reader),
        }

    def _problems(self, reader: ReplicationReader) -> dict[str, Any]:
        """Whether the feed is stuck (failing again and again at one position: the
        slot keeps WAL meanwhile, see lag_bytes) and what it had to leave out."""
        stuck = reader.failures.state
        skips = reader.skips
        return {
            "stuck_since_lsn": None if stuck is None else lsn_to_str(stuck.since_lsn),
            "stuck_since": None
            if stuck is None
            else datetime.fromtimestamp(stuck.since_time, UTC).isoformat(),
            "consecutive_failures": 0 if stuck is None else stuck.failures,
            "last_error": None if stuck is None else stuck.last_error,
            "max_failures": self.config.max_failures,
            "skipped_changes": skips.get("skipped_changes"),
            "values_as_text": skips.get("values_as_text"),
            "toast_fill_failures": skips.get("toast_fill_failures"),
            "unencodable_columns": skips.get("unencodable_columns"),
        }

    async def _consume(self, reader: ReplicationReader, queue: asyncio.Queue[Batch]) -> None:
        """Hand batches to `on_batch` in order. Batches that queued up while the
        previous one was being delivered go together in one call (up to
        `max_merged_changes`): the per-call costs, above all the RLS check per distinct
        viewer, are then shared by more rows just when the feed is behind. Idle, each
        batch goes alone, as soon as it arrives."""
        assert self._handler is not None
        carry: Batch | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            if first.generation <= self._failed_generation:
                continue  # after a failed delivery: the reader re-reads these
            changes, last = first.changes, first
            while len(changes) < self.max_merged_changes and not queue.empty():
                nxt = queue.get_nowait()
                if nxt.generation != first.generation:
                    carry = nxt  # after a reconnect: delivered on its own
                    break
                if last is first:
                    changes = list(changes)
                changes.extend(nxt.changes)
                last = nxt
            number_changes(changes)
            try:
                try:
                    await self._handler(changes)
                except Exception as exc:
                    if not self._give_up(reader, exc, last.end_lsn):
                        raise
                    await self._deliver_one_by_one(reader, changes)
            except Exception:  # read the batch again (transient, or not given up yet)
                self._failed_generation = first.generation
                reader.request_reconnect(first.generation)
                continue
            self.delivered_batches += 1
            self.delivered_changes += len(changes)
            self.last_handover = (changes[-1].commit_timestamp, time.time())
            reader.ack(last.generation, last.seq)  # acknowledges every batch up to it
            self._acked_end = max(self._acked_end, last.end_lsn)

    def _give_up(self, reader: ReplicationReader, exc: Exception, end_lsn: int) -> bool:
        """A delivery failed: True once it failed `max_failures` times in a row at the
        same position (then it goes change by change, skipping what fails), False to
        read it again. A database that cannot do it now (unreachable, restarting, shutting
        down, out of resources: `db.errors.transient`) is retried for ever and never
        counted against the batch."""
        error = f"{type(exc).__name__}: {str(exc).strip()}"
        if transient(exc):
            log.warning("change feed: delivering up to %s failed: %s", lsn_to_str(end_lsn), error)
            return False
        at = self._acked_end  # where the failed batch starts (after the last one acked)
        failures = reader.failures.failed(at, at, error)
        limit = self.config.max_failures
        log.error(
            "change feed: delivering a batch up to %s failed (%d in a row at %s)%s",
            lsn_to_str(end_lsn),
            failures,
            lsn_to_str(at),
            "; delivering it change by change, skipping what fails"
            if 0 < limit <= failures
            else "; it will be read again",
            exc_info=failures == 1,  # one traceback per stuck position, not per retry
        )
        return 0 < limit <= failures

    async def _deliver_one_by_one(
        self, reader: ReplicationReader, changes: list[RowChange]
    ) -> None:
        """The last resort for a batch that keeps failing: each change alone; the ones
        that still fail are logged, counted and skipped. A transient database error
        raises (the batch is then read again, as usual)."""
        assert self._handler is not None
        for change in changes:
            try:
                await self._handler([change])
            except Exception as exc:
                if transient(exc):
                    raise
                reader.skips.add(
                    "skipped_changes",
                    f"skipped a {change.event} of {change.schema}.{change.table} at "
                    f"{lsn_to_str(change.lsn)}: {type(exc).__name__}: {exc}",
                )


def number_changes(changes: list[RowChange]) -> None:
    """Set each change's place in its transaction. A batch holds whole transactions, in
    commit order, so the changes of one transaction (one `lsn`) are together."""
    lsn, index = -1, 0
    for change in changes:
        if change.lsn != lsn:
            lsn, index = change.lsn, 0
        change.index = index
        index += 1


# pg_class.relreplident -> the name the CLI and the REST route use.
REPLICA_IDENTITIES = {"d": "default", "f": "full", "n": "nothing", "i": "index"}
IDENTITY_LOCK_TIMEOUT = "5s"

_FIND_TABLE = """
SELECT c.oid, c.relreplident::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"""

# The table and, for a partitioned table, every partition below it: PostgreSQL does
# not pass REPLICA IDENTITY down, and each partition writes its own rows to the WAL.
# Names are quoted by format('%I'); the identity keyword comes from a fixed map.
_ALTER_STATEMENTS = """
SELECT format('ALTER TABLE %I.%I REPLICA IDENTITY %s', n.nspname, c.relname, $2::text)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND (c.oid = $1::oid OR c.oid IN (
  SELECT t.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) t))
ORDER BY c.oid <> $1::oid, c.oid
"""


# After the change: is the table (or a partition or parent of it) in a publication that
# publishes UPDATE or DELETE while one of its tables has no usable replica identity?
# PostgreSQL would then refuse the application's UPDATE and DELETE on it.
_WOULD_BREAK_WRITES = """
WITH tree AS (
  SELECT t.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) t
  UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors($1::oid::regclass) a
  UNION SELECT $1::oid
)
SELECT string_agg(DISTINCT p.pubname, ', ' ORDER BY p.pubname)
FROM pg_catalog.pg_publication p
WHERE (p.pubupdate OR p.pubdelete)
  AND (p.puballtables OR EXISTS (
    SELECT 1 FROM pg_catalog.pg_publication_tables pt
    JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
    WHERE pt.pubname = p.pubname AND c.oid IN (SELECT relid FROM tree)))
  AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    WHERE c.oid IN (SELECT relid FROM tree) AND c.relkind = 'r' AND NOT (
      c.relreplident = 'f'
      OR (c.relreplident = 'd' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
      OR (c.relreplident = 'i' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i
            WHERE i.indrelid = c.oid AND i.indisreplident))))
"""


class ReplicaIdentityRequired(Exception):
    """Going back to DEFAULT would leave a published table without a primary key, and
    PostgreSQL would refuse the application's UPDATE and DELETE on it. Nothing was
    changed; the message says what to do instead."""


async def replica_identity(db: Database | Any, schema: str, table: str) -> str:
    """The replica identity of schema.table: 'default', 'full', 'nothing' or 'index'.
    Raises LookupError when there is no such table."""
    row = await db.fetchrow(_FIND_TABLE, schema, table)
    if row is None:
        raise LookupError(f"table {schema}.{table} does not exist")
    return REPLICA_IDENTITIES.get(row[1], row[1])


@contextlib.asynccontextmanager
async def _connection(db: Any) -> AsyncIterator[Any]:
    """A connection of a pool (held for the block), or the connection given."""
    if hasattr(db, "acquire"):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def set_replica_identity_full(
    db: Database | Any, schema: str, table: str, *, full: bool = True
) -> str:
    """ALTER TABLE ... REPLICA IDENTITY FULL (or back to DEFAULT); returns the identity
    it had before ('default', 'full', 'nothing' or 'index').

    With FULL, UPDATE and DELETE changes carry the whole old row in `old` instead of
    only the key, at the cost of more WAL; a table without a primary key can then be
    published. A partitioned table's partitions are changed with it, in one
    transaction. `db` is an asyncpg Pool or Connection. Raises LookupError when the
    table does not exist, asyncpg's InsufficientPrivilegeError when the user does not
    own it, LockNotAvailableError when it stayed locked for 5 s, and
    ReplicaIdentityRequired (changing nothing) when DEFAULT would break the writes of a
    published table without a primary key."""
    identity = "FULL" if full else "DEFAULT"
    async with _connection(db) as conn, conn.transaction():
        row = await conn.fetchrow(_FIND_TABLE, schema, table)
        if row is None:
            raise LookupError(f"table {schema}.{table} does not exist")
        await conn.execute("SELECT set_config('lock_timeout', $1, true)", IDENTITY_LOCK_TIMEOUT)
        for (statement,) in await conn.fetch(_ALTER_STATEMENTS, row[0], identity):
            await conn.execute(statement)
        if not full:
            publications = await conn.fetchval(_WOULD_BREAK_WRITES, row[0])
            if publications:
                raise ReplicaIdentityRequired(
                    f"table {schema}.{table} is published ({publications}) and has no primary "
                    f"key: with REPLICA IDENTITY DEFAULT PostgreSQL would refuse its UPDATE "
                    f"and DELETE. Add a primary key first, or take it out of the publication "
                    f"(ALTER PUBLICATION ... DROP TABLE ...)"
                )
    return REPLICA_IDENTITIES.get(row[1], row[1])
