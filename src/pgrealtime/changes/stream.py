"""Streams committed row changes from a logical replication slot (pgoutput).

Runs psycopg2's LogicalReplicationConnection in one background thread, because
asyncpg does not speak the replication protocol. The thread decodes (pgoutput.py),
assembles whole transactions, builds their row changes (rows.py), batches consecutive
transactions, and hands each batch to a `submit` function (the feed forwards it to the
event loop). The slot and publication are set up before (slot.py).

Nothing is lost: the slot's confirmed position only moves (send_feedback with
flush_lsn) up to the end of the last batch the asyncio side has *acknowledged*,
i.e. handed to subscribers; `ack_window.AckWindow` decides what and when. After a
crash, a restart or a dropped connection, PostgreSQL resends everything after that
position. The price is at-least-once: a batch in flight at a crash may be delivered
twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2.extras

from pgrealtime.changes import pgoutput
from pgrealtime.changes.ack_window import AckWindow
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
)
from pgrealtime.changes.rows import RowBuilder, Transaction
from pgrealtime.changes.skips import FailureTracker, SkipCounter
from pgrealtime.changes.slot import CONNECTION_ERRORS, connect

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """Consecutive committed transactions' row changes, in commit order."""

    generation: int
    seq: int
    changes: list[RowChange]
    end_lsn: int


@dataclass(frozen=True)
class ReaderConfig:
    """What the stream runs with: the feed's settings (config.FeedSettings) and its
    tuning, fixed for the reader's life."""

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


class ReplicationReader:
    """The background thread. Thread-safe methods: `ack`, `request_reconnect`, `stop`;
    the counters are read from any thread. Everything else runs on the thread."""

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
        self.skips = SkipCounter()  # values kept as text, columns and changes left out
        self.failures = FailureTracker()  # repeated failures at one WAL position
        # thread-only state
        self._window = AckWindow(config.min_feedback_interval, config.status_interval)
        self._rows = RowBuilder(config.excluded_schemas, self.skips)

    @property
    def acked_lsn(self) -> int:
        """Highest end LSN the asyncio side acknowledged."""
        return self._window.acked_lsn

    @property
    def confirmed_lsn(self) -> int:
        """Highest end LSN sent to PostgreSQL as flushed."""
        return self._window.confirmed_lsn

    @property
    def toast_lookups(self) -> int:
        """Queries made to fill unchanged TOAST values."""
        return self._rows.toast_lookups

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
        repl = connect(cfg.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            db = connect(cfg.dsn)
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
        self._rows.new_session()
        window = self._window
        window.restart()
        batch: list[RowChange] = []
        batch_end = 0  # end LSN of the last transaction in `batch` (0: none)
        tx: Transaction | None = None
        last_lag = 0.0
        batch_started = 0.0

        def confirm(force: bool = False) -> None:
            """The one place the slot's position moves: what the asyncio side
            acknowledged, in order, paced by the window."""
            with self._lock:
                acked_seq = self._acked_seq
            if window.acknowledged(acked_seq):
                self.failures.progressed(window.acked_lsn)
            now = time.monotonic()
            lsn = window.confirmation_due(now, force)
            if lsn is not None:
                cur.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=True)
                window.confirmed(lsn, now)

        def submit_batch() -> None:
            nonlocal batch, batch_end
            if batch_end == 0:
                return
            if batch:
                seq = window.handed_over(batch_end)
                self._submit(Batch(generation, seq, batch, batch_end))
            else:  # only transactions with nothing for us: confirm in order
                window.nothing_to_hand(batch_end)
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
            if window.in_flight >= cfg.max_in_flight:
                now = time.monotonic()
                if window.keepalive_due(now):
                    cur.send_feedback(force=True)
                    window.kept_alive(now)
                self._wait(None, 1.0)
                continue

            # 3. read and decode
            msg = cur.read_message()
            if msg is None:
                submit_batch()
                timeout = cfg.min_feedback_interval if window.behind else 1.0
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
                tx = Transaction(message.xid, message.commit_time)
            elif isinstance(message, Insert | Update | Delete | Truncate):
                if tx is not None:
                    tx.rows.append(message)
            elif isinstance(message, Relation):
                self._rows.on_relation(db, message)
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

    def _build_or_skip(self, db: Any, tx: Transaction, commit: Commit) -> list[RowChange]:
        """`RowBuilder.build`, except that a transaction failing `max_failures` times in a
        row (each failure re-reads it from the slot) is skipped, logged and counted, so
        one bad row cannot stop the feed for every table and pin WAL for ever."""
        try:
            return self._rows.build(db, tx, commit)
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
