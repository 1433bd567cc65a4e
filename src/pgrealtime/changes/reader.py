"""Reads committed row changes from a logical replication slot (pgoutput).

Runs psycopg2's LogicalReplicationConnection in one background thread, because
asyncpg does not speak the replication protocol. The thread decodes, assembles
whole transactions, converts values, batches consecutive transactions, and hands
each batch to a `submit` function (the feed forwards it to the event loop).

Nothing is lost: the slot's confirmed position only moves (send_feedback with
flush_lsn) up to the end of the last batch the asyncio side has *acknowledged*,
i.e. handed to subscribers. After a crash, a restart or a dropped connection,
PostgreSQL resends everything after that position. The price is at-least-once:
a batch in flight at a crash may be delivered twice.

Unchanged TOASTed columns: an UPDATE that leaves a large value alone does not
carry it. Under REPLICA IDENTITY FULL the old tuple has it (PostgreSQL inlines it).
Otherwise the reader fetches the current value by primary key, one query per
table per transaction. If the row changed again or is gone meanwhile, the value
is the newer one, or the column is left out of `new`.

TRUNCATE (when the publication publishes it, the default) becomes one change per
truncated table, with no row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from pgrealtime.changes import pgoutput
from pgrealtime.changes.model import EventType, RowChange
from pgrealtime.changes.pgoutput import (
    IDENTITY_FULL,
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    TupleValue,
    Update,
)
from pgrealtime.changes.skips import FailureTracker, SkipCounter
from pgrealtime.changes.values import PgType, TypeRegistry, ValueAsText, format_utc

log = logging.getLogger(__name__)

# Every session of the reader prints values the way values.py parses them,
# whatever the server's or the database's defaults are.
SESSION_OPTIONS = (
    "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=postgres "
    "-c bytea_output=hex -c extra_float_digits=1"
)

WAL_LEVEL_REASON = (
    "change notifications need wal_level=logical: "
    "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
)


def wal_level_problem(wal_level: str) -> str | None:
    """Why change notifications cannot work with this wal_level, or None (pure)."""
    return None if wal_level.strip().lower() == "logical" else WAL_LEVEL_REASON


def role_problem(user: str, is_superuser: bool, can_replicate: bool) -> str | None:
    if is_superuser or can_replicate:
        return None
    return (
        f"change notifications need a database user allowed to replicate: "
        f'ALTER ROLE "{user}" REPLICATION; (it also needs to own the tables it '
        f"publishes, or to be a superuser)"
    )


class FeedDisabled(Exception):
    """Change notifications cannot run against this database; `reason` says why and how
    to fix it. The rest of the server keeps working."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Batch:
    """Consecutive committed transactions' row changes, in commit order."""

    generation: int
    seq: int
    changes: list[RowChange]
    end_lsn: int


@dataclass(slots=True)
class _RelationMeta:
    """What the catalog says about a relation, beyond its Relation message."""

    pk_columns: tuple[str, ...]  # primary key, or replica identity index columns
    rls: bool


@dataclass(slots=True)
class _Transaction:
    xid: int
    commit_time: Any
    rows: list[Insert | Update | Delete | Truncate] = field(default_factory=list)


@dataclass
class ReaderConfig:
    dsn: str
    slot: str = "pgrealtime"
    publication: str = "pgrealtime"
    excluded_schemas: frozenset[str] = frozenset({"realtime"})
    max_batch_changes: int = 1000
    max_in_flight: int = 8  # batches handed over and not yet acknowledged
    status_interval: float = 10.0
    lag_interval: float = 5.0
    max_batch_delay: float = 0.05  # a busy stream still hands over at least this often
    min_feedback_interval: float = 0.1
    reconnect_min: float = 0.2
    reconnect_max: float = 30.0
    # a transaction that fails to build this many times in a row is skipped (logged
    # and counted); 0: retried for ever
    max_failures: int = 3


def _connect(dsn: str, **kwargs: Any) -> Any:
    return psycopg2.connect(dsn, options=SESSION_OPTIONS, **kwargs)


# Published tables whose UPDATE and DELETE PostgreSQL refuses: no usable replica
# identity (no primary key and identity DEFAULT, a dropped identity index, or NOTHING),
# partitions included. The feed never adds such a table, but a table can lose its key
# after being added, and a FOR ALL TABLES publication (earlier versions) has them all.
PUBLISHED_WITHOUT_IDENTITY = """
SELECT DISTINCT p.schemaname || '.' || p.tablename
FROM pg_publication_tables p
JOIN pg_namespace n ON n.nspname = p.schemaname
JOIN pg_class r ON r.relnamespace = n.oid AND r.relname = p.tablename
JOIN pg_class c ON c.oid = r.oid OR c.oid IN (
  SELECT t.relid FROM pg_partition_tree(r.oid) t WHERE t.isleaf)
WHERE p.pubname = %s AND c.relkind = 'r'
  AND NOT (c.relreplident = 'f'
    OR (c.relreplident = 'd' AND EXISTS (
          SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
    OR (c.relreplident = 'i' AND EXISTS (
          SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
ORDER BY 1 LIMIT 100
"""


@dataclass(slots=True)
class Prepared:
    """What `prepare` found: whether the publication is FOR ALL TABLES (made by an
    earlier version; left alone), and the published tables whose UPDATE and DELETE
    PostgreSQL refuses because of it."""

    all_tables: bool
    without_identity: list[str]


def prepare(config: ReaderConfig) -> Prepared:
    """Check the server can do logical replication, then create the publication (empty:
    tables are added as they are subscribed to) and the slot if missing. Raises
    FeedDisabled with a reason when it cannot; connection errors propagate."""
    conn = _connect(config.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            problem = wal_level_problem(cur.fetchone()[0])
            if problem:
                raise FeedDisabled(problem)
            cur.execute(
                "SELECT current_user, rolsuper, rolreplication FROM pg_roles "
                "WHERE rolname = current_user"
            )
            problem = role_problem(*cur.fetchone())
            if problem:
                raise FeedDisabled(problem)
            cur.execute(
                "SELECT puballtables FROM pg_publication WHERE pubname = %s",
                (config.publication,),
            )
            row = cur.fetchone()
            all_tables = bool(row and row[0])
            if row is None:
                # Never FOR ALL TABLES: that makes PostgreSQL refuse UPDATE and DELETE on
                # every table without a primary key, subscribed to or not.
                try:
                    cur.execute(
                        sql.SQL(
                            "CREATE PUBLICATION {} WITH (publish_via_partition_root = true)"
                        ).format(sql.Identifier(config.publication))
                    )
                    log.info("created publication %s (empty)", config.publication)
                except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
                    pass  # another process created it meanwhile (the catalog's index may say so)
                except psycopg2.errors.InsufficientPrivilege as exc:
                    raise FeedDisabled(
                        f"cannot create publication {config.publication}: "
                        f"{(exc.pgerror or str(exc)).strip()}; grant CREATE on the database "
                        f"to the server's user, or as a superuser run: CREATE PUBLICATION "
                        f'"{config.publication}" WITH (publish_via_partition_root = true);'
                    ) from exc
            cur.execute(
                "SELECT database, plugin FROM pg_replication_slots WHERE slot_name = %s",
                (config.slot,),
            )
            row = cur.fetchone()
            cur.execute("SELECT current_database()")
            database = cur.fetchone()[0]
            if row is None:
                try:
                    cur.execute(
                        "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (config.slot,)
                    )
                    log.info("created replication slot %s", config.slot)
                except psycopg2.errors.DuplicateObject:
                    pass
                except psycopg2.DatabaseError as exc:  # e.g. max_replication_slots reached
                    raise FeedDisabled(
                        f"cannot create replication slot {config.slot}: "
                        f"{(exc.pgerror or str(exc)).strip()}"
                    ) from exc
            elif row[0] != database or row[1] != "pgoutput":
                raise FeedDisabled(
                    f"replication slot {config.slot} belongs to database {row[0]} "
                    f"(plugin {row[1]}), not {database} (pgoutput): choose another slot name"
                )
            cur.execute(PUBLISHED_WITHOUT_IDENTITY, (config.publication,))
            return Prepared(all_tables, [r[0] for r in cur.fetchall()])
    finally:
        conn.close()


def drop_slot(dsn: str, slot: str) -> bool:
    """Drop the slot (it retains WAL until dropped). Returns whether it existed."""
    conn = _connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return cur.rowcount > 0
    finally:
        conn.close()


def _quote(name: str) -> sql.Composable:
    return sql.Identifier(name)


# Errors that say the connection is gone, not that a row is bad: those are retried
# for ever (with backoff), never counted towards skipping a transaction.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, OSError)


class _Confirmer:
    """The one place the slot's position moves: pops the batches the asyncio side
    acknowledged (in order; batches with nothing for us need no acknowledgement) and
    sends their end as flushed. A position acknowledged within `min_feedback_interval`
    of the previous confirmation is not forgotten: it stays owed (`behind`) until the
    next call past the interval sends it, with no further change needed."""

    def __init__(self, reader: ReplicationReader, cur: Any, pending: deque) -> None:
        self.reader = reader
        self.cur = cur
        self.pending = pending
        self.last_feedback = 0.0

    def __call__(self, force: bool = False) -> None:
        reader, pending = self.reader, self.pending
        with reader._lock:
            acked_seq = reader._acked_seq
        acked = reader.acked_lsn
        while pending and (not pending[0][2] or pending[0][0] <= acked_seq):
            acked = max(acked, pending.popleft()[1])
        if acked > reader.acked_lsn:
            reader.acked_lsn = acked
            reader.failures.progressed(acked)
        now = time.monotonic()
        if self.behind() and (
            force or now - self.last_feedback >= reader.config.min_feedback_interval
        ):
            self.cur.send_feedback(write_lsn=acked, flush_lsn=acked, force=True)
            reader.confirmed_lsn = acked
            self.last_feedback = now

    def behind(self) -> bool:
        """Acknowledged further than confirmed: a confirmation is owed."""
        return self.reader.acked_lsn > self.reader.confirmed_lsn

    def keepalive(self) -> None:
        """While nothing moves (back-pressure), keep the session alive."""
        now = time.monotonic()
        if now - self.last_feedback >= self.reader.config.status_interval / 2:
            self.cur.send_feedback(force=True)
            self.last_feedback = now


class ReplicationReader:
    """The background thread. Thread-safe methods: `ack`, `request_reconnect`, `stop`,
    `snapshot`. Everything else runs on the thread."""

    def __init__(self, config: ReaderConfig, submit: Callable[[Batch], None]) -> None:
        self.config = config
        self._submit = submit
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # shared state, guarded by _lock
        self._generation = 0
        self._acked_seq = -1  # highest acknowledged batch seq of the current generation
        self._reconnect_requested = False
        self.state = "stopped"
        self.reason: str | None = None
        self.lag_bytes: int | None = None
        self.confirmed_lsn = 0  # highest end LSN sent as flushed
        self.acked_lsn = 0  # highest end LSN the asyncio side acknowledged
        self.toast_lookups = 0  # queries made to fill unchanged TOAST values
        self.skips = SkipCounter()  # values kept as text, columns and changes left out
        self.failures = FailureTracker()  # repeated failures at one WAL position
        # thread-only state
        self._types = TypeRegistry()
        self._meta: dict[int, _RelationMeta] = {}

    # -- thread-safe API ------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self.state = "starting"
        self._thread = threading.Thread(target=self._run, name="pgrealtime-changes", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.state = "stopped"

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def ack(self, generation: int, seq: int) -> None:
        """The asyncio side handed batch `seq` to subscribers: its LSN may be confirmed."""
        with self._lock:
            if generation == self._generation and seq > self._acked_seq:
                self._acked_seq = seq
        self._wake()

    def request_reconnect(self, generation: int) -> None:
        """Delivery of a batch failed: drop what is in flight and restart the stream
        from the confirmed position, so the failed batch is read again."""
        with self._lock:
            if generation == self._generation:
                self._reconnect_requested = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        delay = self.config.reconnect_min
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._stream()
            except Exception as exc:  # any failure: report, back off, reconnect
                if self._stop.is_set():
                    break
                self.state = "reconnecting"
                self.reason = f"{type(exc).__name__}: {str(exc).strip()}"
                log.warning("change feed: %s; reconnecting in %.1fs", self.reason, delay)
            if time.monotonic() - started > 30:
                delay = self.config.reconnect_min
            self._stop.wait(delay)
            delay = min(delay * 2, self.config.reconnect_max)
        self.state = "stopped"

    def _stream(self) -> None:
        cfg = self.config
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._acked_seq = -1
            self._reconnect_requested = False
        repl = _connect(cfg.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            db = _connect(cfg.dsn)
            db.autocommit = True
        except Exception:
            repl.close()
            raise
        try:
            self._session(repl, db, generation)
        finally:
            for conn in (repl, db):
                with contextlib.suppress(Exception):
                    conn.close()

    def _session(self, repl: Any, db: Any, generation: int) -> None:
        cfg = self.config
        cur = repl.cursor()
        cur.start_replication(
            slot_name=cfg.slot,
            decode=False,
            options={"proto_version": "1", "publication_names": cfg.publication},
            status_interval=cfg.status_interval,
        )
        self.state = "streaming"
        self.reason = None
        decoder = pgoutput.Decoder()  # the server resends Relation messages per session
        self._meta.clear()
        pending: deque[tuple[int, int, bool]] = deque()  # (seq, end_lsn, needs_ack)
        seq = 0
        batch: list[RowChange] = []
        batch_end = 0  # end LSN of the last transaction in `batch` (0: none)
        tx: _Transaction | None = None
        last_lag = 0.0
        batch_started = 0.0
        confirm = _Confirmer(self, cur, pending)

        def submit_batch() -> None:
            nonlocal seq, batch, batch_end
            if batch_end == 0:
                return
            if batch:
                pending.append((seq, batch_end, True))
                self._submit(Batch(generation, seq, batch, batch_end))
            else:  # only transactions with nothing for us: confirm in order
                pending.append((seq, batch_end, False))
            seq += 1
            batch = []
            batch_end = 0

        while not self._stop.is_set():
            # 1. confirm what the asyncio side acknowledged, in order
            confirm()
            with self._lock:
                if self._reconnect_requested:
                    raise ConnectionResetError("delivery failed; re-reading from the slot")
            now = time.monotonic()
            if now - last_lag >= cfg.lag_interval:
                self._refresh_lag(db)
                last_lag = now

            # 2. back-pressure: while too much is in flight, only keep the session alive
            in_flight = sum(1 for p in pending if p[2])
            if in_flight >= cfg.max_in_flight:
                confirm.keepalive()
                self._wait(None, 1.0)
                continue

            # 3. read and decode
            msg = cur.read_message()
            if msg is None:
                submit_batch()
                timeout = cfg.min_feedback_interval if confirm.behind() else 1.0
                self._wait(cur, timeout)
                continue
            data: bytes = msg.payload
            relid = decoder.relid_of(data)
            if relid is not None:
                relation = decoder.relations.get(relid)
                if relation is not None and relation.schema in cfg.excluded_schemas:
                    continue  # skipped without decoding its tuples
            message = decoder.decode(data)
            if isinstance(message, Begin):
                tx = _Transaction(message.xid, message.commit_time)
            elif isinstance(message, Insert | Update | Delete | Truncate):
                if tx is not None:
                    tx.rows.append(message)
            elif isinstance(message, Relation):
                self._on_relation(db, message)
            elif isinstance(message, Commit):
                if batch_end == 0:
                    batch_started = time.monotonic()
                if tx is not None and message.end_lsn > self.acked_lsn:
                    batch.extend(self._build_or_skip(db, tx, message))
                batch_end = message.end_lsn
                tx = None
                if (
                    len(batch) >= cfg.max_batch_changes
                    or time.monotonic() - batch_started >= cfg.max_batch_delay
                ):
                    submit_batch()

        confirm(force=True)  # stopping: confirm what was acknowledged before leaving

    def _build_or_skip(self, db: Any, tx: _Transaction, commit: Commit) -> list[RowChange]:
        """`_build_changes`, except that a transaction failing `max_failures` times in a
        row (each failure re-reads it from the slot) is skipped, logged and counted, so
        one bad row cannot stop the feed for every table and pin WAL for ever."""
        try:
            return self._build_changes(db, tx, commit)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).strip()}"
            failures = self.failures.failed(commit.end_lsn, self.acked_lsn, error)
            limit = self.config.max_failures
            if limit <= 0 or failures < limit:
                raise
            log.error(
                "change feed: skipped transaction %s (commit %s, %d row changes) after %d "
                "failures: %s",
                tx.xid,
                pgoutput.lsn_to_str(commit.end_lsn),
                len(tx.rows),
                failures,
                error,
                exc_info=True,
            )
            self.skips.add("skipped_changes", "skipped a transaction", len(tx.rows))
            return []

    def _wait(self, cur: Any, timeout: float) -> None:
        fds = [self._wake_r] if cur is None else [cur, self._wake_r]
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in ready:
                self._drain_wake()

    def _refresh_lag(self, db: Any) -> None:
        with db.cursor() as c:
            c.execute(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.config.slot,),
            )
            row = c.fetchone()
        self.lag_bytes = None if row is None else row[0]

    # -- catalog ----------------------------------------------------------------------

    def _on_relation(self, db: Any, relation: Relation) -> None:
        """A (new or changed) relation: learn its types and its key and RLS setting."""
        if relation.schema in self.config.excluded_schemas:
            return
        self._learn_types(db, [c.type_oid for c in relation.columns])
        with db.cursor() as c:
            c.execute(
                "SELECT c.relrowsecurity, "
                "  (SELECT array_agg(a.attname::text ORDER BY k.ord) "
                "   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
                "     AS k(attnum, ord) "
                "   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "   WHERE i.indrelid = c.oid AND i.indisprimary) "
                "FROM pg_class c WHERE c.oid = %s",
                (relation.relid,),
            )
            row = c.fetchone()
        rls = bool(row and row[0])
        primary = tuple(row[1]) if row and row[1] else ()
        if relation.replica_identity == IDENTITY_FULL or not relation.key_columns:
            pk = primary
        else:
            pk = relation.key_columns  # the replica identity (primary key or index)
        self._meta[relation.relid] = _RelationMeta(pk, rls)

    def _learn_types(self, db: Any, oids: list[int]) -> None:
        missing = self._types.needs(oids)
        while missing:
            with db.cursor() as c:
                c.execute(
                    "SELECT oid::int, typname::text, typtype::text, typcategory::text, "
                    "typelem::int, typbasetype::int, typdelim::text "
                    "FROM pg_type WHERE oid = ANY(%s::oid[])",
                    (sorted(missing),),
                )
                rows = c.fetchall()
            for row in rows:
                self._types.add(PgType(*row))
            found = {row[0] for row in rows}
            for oid in missing - found:  # vanished type: treat as text from now on
                self._types.add(PgType(oid, "unknown"))
            missing = self._types.needs(oids)

    # -- building changes -----------------------------------------------------------

    def _convert(self, relation: Relation, values: tuple[TupleValue, ...]) -> dict[str, Any]:
        converter = self._types.converter
        row: dict[str, Any] = {}
        for column, value in zip(relation.columns, values, strict=True):
            if value is UNCHANGED_TOAST:
                continue
            if value is None:
                row[column.name] = None
            elif isinstance(value, bytes):
                row[column.name] = "\\x" + value.hex()
            else:
                try:
                    row[column.name] = converter(column.type_oid)(value)  # type: ignore[arg-type]
                except Exception as exc:  # one value costs itself, never the batch
                    row[column.name] = self._as_text(relation, column.name, value, exc)  # type: ignore[arg-type]
        return row

    def _as_text(self, relation: Relation, column: str, text: str, exc: Exception) -> str:
        """A value that did not convert (too deeply nested JSON, or a converter bug):
        delivered as the text PostgreSQL printed, counted and logged (not flooded)."""
        why = str(exc) if isinstance(exc, ValueAsText) else f"{type(exc).__name__}: {exc}"
        self.skips.add(
            "values_as_text",
            f"{relation.schema}.{relation.name}.{column} delivered as text ({why})",
        )
        return text

    def _key_columns(self, relation: Relation, values: tuple[TupleValue, ...]) -> dict[str, Any]:
        return {
            c.name: v
            for c, v in zip(relation.columns, values, strict=True)
            if c.is_key and v is not UNCHANGED_TOAST
        }

    def _build_changes(self, db: Any, tx: _Transaction, commit: Commit) -> list[RowChange]:
        timestamp = format_utc(commit.commit_time)
        filled = self._fill_toast(db, tx.rows)
        changes: list[RowChange] = []
        for i, message in enumerate(tx.rows):
            if isinstance(message, Truncate):
                changes.extend(self._truncate_changes(tx, commit, timestamp, message))
                continue
            relation = message.relation
            meta = self._meta.get(relation.relid) or _RelationMeta(relation.key_columns, False)
            event: EventType
            if isinstance(message, Insert):
                event, new_values, old = "INSERT", message.new, None
            elif isinstance(message, Update):
                event, new_values = "UPDATE", filled.get(i, message.new)
                if message.old_kind == "O":
                    old = self._convert(relation, message.old)  # type: ignore[arg-type]
                else:
                    source = message.old if message.old is not None else message.new
                    old = self._key_columns_converted(relation, source)
            else:
                event, new_values = "DELETE", None
                if message.old_kind == "O":
                    old = self._convert(relation, message.old)
                else:
                    old = self._key_columns_converted(relation, message.old)
            key_source = message.old if isinstance(message, Delete) else new_values
            names = [c.name for c in relation.columns]
            key: dict[str, str | None] = {}
            for name in meta.pk_columns:
                if name in names:
                    value = key_source[names.index(name)]  # type: ignore[index]
                    if isinstance(value, str):
                        key[name] = value
            if len(key) != len(meta.pk_columns):
                key = {}
            changes.append(
                RowChange(
                    schema=relation.schema,
                    table=relation.name,
                    event=event,
                    commit_timestamp=timestamp,
                    lsn=commit.end_lsn,
                    xid=tx.xid,
                    new=None if new_values is None else self._convert(relation, new_values),
                    old=old,
                    key=key,
                    relid=relation.relid,
                    rls=meta.rls,
                    identity_full=relation.replica_identity == IDENTITY_FULL,
                )
            )
        return changes

    def _truncate_changes(
        self, tx: _Transaction, commit: Commit, timestamp: str, message: Truncate
    ) -> list[RowChange]:
        """One TRUNCATE change per truncated table (a TRUNCATE of several tables, or
        with CASCADE, is one message). No row: `new`, `old` and `key` stay empty."""
        changes = []
        for relation in message.relations:
            if relation.schema in self.config.excluded_schemas:
                continue
            meta = self._meta.get(relation.relid)
            changes.append(
                RowChange(
                    schema=relation.schema,
                    table=relation.name,
                    event="TRUNCATE",
                    commit_timestamp=timestamp,
                    lsn=commit.end_lsn,
                    xid=tx.xid,
                    new=None,
                    old=None,
                    relid=relation.relid,
                    rls=bool(meta and meta.rls),
                    identity_full=relation.replica_identity == IDENTITY_FULL,
                )
            )
        return changes

    def _key_columns_converted(
        self, relation: Relation, values: tuple[TupleValue, ...]
    ) -> dict[str, Any]:
        types = {c.name: c.type_oid for c in relation.columns}
        return {
            name: None if value is None else self._convert_one(relation, name, types[name], value)
            for name, value in self._key_columns(relation, values).items()
        }

    def _convert_one(self, relation: Relation, name: str, type_oid: int, value: Any) -> Any:
        if isinstance(value, bytes):
            return "\\x" + value.hex()
        try:
            return self._types.converter(type_oid)(value)
        except Exception as exc:
            return self._as_text(relation, name, value, exc)

    def _fill_toast(
        self, db: Any, rows: list[Insert | Update | Delete | Truncate]
    ) -> dict[int, tuple[TupleValue, ...]]:
        """New tuples of UPDATEs with their unchanged TOASTed values filled in, by row
        index in the transaction. From the old tuple under REPLICA IDENTITY FULL,
        else one primary-key lookup per table."""
        filled: dict[int, tuple[TupleValue, ...]] = {}
        lookups: dict[int, list[int]] = {}  # relid -> row indexes needing a fetch
        for i, message in enumerate(rows):
            if not isinstance(message, Update) or UNCHANGED_TOAST not in message.new:
                continue
            values = list(message.new)
            if message.old_kind == "O" and message.old is not None:
                for j, value in enumerate(values):
                    if value is UNCHANGED_TOAST and message.old[j] is not UNCHANGED_TOAST:
                        values[j] = message.old[j]
            filled[i] = tuple(values)
            if UNCHANGED_TOAST in values:
                lookups.setdefault(message.relation.relid, []).append(i)
        for indexes in lookups.values():
            try:
                self._fetch_unchanged(db, rows, indexes, filled)
            except CONNECTION_ERRORS:
                raise
            except psycopg2.Error as exc:
                # e.g. the table or a column was dropped or renamed since the change,
                # or a key does not fit the row type: the values stay out of `new`,
                # as for a row deleted meanwhile
                relation = rows[indexes[0]].relation
                self.skips.add(
                    "toast_fill_failures",
                    f"unchanged TOAST values of {relation.schema}.{relation.name} left out "
                    f"of `new` ({type(exc).__name__}: {(exc.pgerror or str(exc)).strip()})",
                    len(indexes),
                )
        return filled

    def _fetch_unchanged(
        self,
        db: Any,
        rows: list[Insert | Update | Delete | Truncate],
        indexes: list[int],
        filled: dict[int, tuple[TupleValue, ...]],
    ) -> None:
        relation = rows[indexes[0]].relation
        meta = self._meta.get(relation.relid)
        pk = meta.pk_columns if meta else ()
        names = [c.name for c in relation.columns]
        if not pk or any(p not in names for p in pk):
            log.warning(
                "change feed: cannot fill unchanged TOAST values of %s.%s (no primary key)",
                relation.schema,
                relation.name,
            )
            return
        pk_pos = [names.index(p) for p in pk]
        wanted = sorted(
            {j for i in indexes for j, v in enumerate(filled[i]) if v is UNCHANGED_TOAST}
        )
        keys = []
        for i in indexes:
            values = filled[i]
            if any(not isinstance(values[p], str) for p in pk_pos):
                continue
            keys.append({names[p]: values[p] for p in pk_pos})
        if not keys:
            return
        table = sql.SQL("{}.{}").format(_quote(relation.schema), _quote(relation.name))
        query = sql.SQL(
            "SELECT {pk}, {cols} FROM {table} AS t "
            "JOIN jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS k ON {join}"
        ).format(
            pk=sql.SQL(", ").join(sql.SQL("t.{}::text").format(_quote(p)) for p in pk),
            cols=sql.SQL(", ").join(sql.SQL("t.{}::text").format(_quote(names[j])) for j in wanted),
            table=table,
            join=sql.SQL(" AND ").join(sql.SQL("t.{0} = k.{0}").format(_quote(p)) for p in pk),
        )
        self.toast_lookups += 1
        with db.cursor() as c:
            c.execute(query, (orjson.dumps(keys).decode(),))
            found = {tuple(r[: len(pk)]): r[len(pk) :] for r in c.fetchall()}
        for i in indexes:
            values = list(filled[i])
            current = found.get(tuple(values[p] for p in pk_pos))
            if current is None:
                continue  # the row is gone: the column stays out of `new`
            for j, value in zip(wanted, current, strict=True):
                if values[j] is UNCHANGED_TOAST:
                    values[j] = value
            filled[i] = tuple(values)
