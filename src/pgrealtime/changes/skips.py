"""Counting what the change feed had to leave out, and when it is stuck.

One bad row (a value no encoder takes, a TOAST fill-in for a table dropped since)
must cost that row or that column, not the feed: the reader and the delivery side
leave it out, count it here, and log it without flooding (at most one line per kind
per `interval`). A failure that recurs at the same WAL position is counted too, so
the feed can give up on that position after a bounded number of tries and its status
can say since when it is stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("pgrealtime.changes")


class SkipCounter:
    """Counts per kind ('values_as_text', 'toast_fill_failures', 'skipped_changes',
    ...), logging a warning at most once per kind per `interval` seconds (with how
    many happened since the last line). Safe to call from any thread."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, detail: str, count: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + count
            pending = self._unlogged.get(kind, 0) + count
            if now - self._logged_at.get(kind, -1e9) < self.interval:
                self._unlogged[kind] = pending
                return
            self._unlogged[kind] = 0
            self._logged_at[kind] = now
        log.warning("change feed: %s (%s: %d since the last such line)", detail, kind, pending)

    def get(self, kind: str) -> int:
        return self.counts.get(kind, 0)


@dataclass
class StuckState:
    """Consecutive failures at one WAL position (`key`); `since_lsn` is the last
    acknowledged position then (where a restart resumes)."""

    key: int = 0
    since_lsn: int = 0
    since_time: float = 0.0  # time.time() of the first failure
    failures: int = 0
    last_error: str | None = None


class FailureTracker:
    """How often the feed failed at the same place in a row. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state: StuckState | None = None

    def failed(self, key: int, since_lsn: int, error: str) -> int:
        """Record a failure at `key`; returns how many in a row happened there."""
        with self._lock:
            state = self.state
            if state is None or state.key != key:
                state = self.state = StuckState(key, since_lsn, time.time())
            state.failures += 1
            state.last_error = error
            return state.failures

    def progressed(self, acked_lsn: int) -> None:
        """The feed acknowledged past the place it was stuck at: not stuck any more.
        (A batch acknowledged before a failing transaction is not past it.)"""
        with self._lock:
            state = self.state
            if state is not None and acked_lsn > state.since_lsn and acked_lsn >= state.key:
                self.state = None
