"""Which WAL position the slot may confirm, and when: the reader's ack window (pure).

The stream hands batches to the asyncio side and must confirm (send as flushed) only
what that side acknowledged, in order: a batch acknowledged before an earlier one is
still in flight does not move the slot. Batches with nothing for us (every change
filtered out) need no acknowledgement but keep their place in the order. Confirmations
are paced (`min_feedback_interval`), yet a position acknowledged just after a
confirmation is never forgotten: it stays owed (`behind`) until the next call past the
interval (security finding 23). While back-pressure stops reading, a keepalive every
half `status_interval` keeps the replication session from timing out.

No I/O, no threads, no clock of its own: the stream passes `now` and sends what this
says to send, so every rule here is tested without a database (tests/changes/test_ack_window.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Handed:
    seq: int
    end_lsn: int
    needs_ack: bool


class AckWindow:
    """Batches in flight and the positions acknowledged and confirmed.

    `acked_lsn` and `confirmed_lsn` outlive a replication session (the next session
    resumes from the slot, and skips transactions already acknowledged); the batches in
    flight and their numbering do not (`restart`)."""

    def __init__(self, min_feedback_interval: float, status_interval: float) -> None:
        self.min_feedback_interval = min_feedback_interval
        self.status_interval = status_interval
        self.acked_lsn = 0  # highest end LSN the asyncio side acknowledged
        self.confirmed_lsn = 0  # highest end LSN sent as flushed
        self._pending: deque[_Handed] = deque()
        self._next_seq = 0
        self._last_feedback = 0.0

    def restart(self) -> None:
        """A new replication session: what was in flight will be read again."""
        self._pending.clear()
        self._next_seq = 0
        self._last_feedback = 0.0

    def handed_over(self, end_lsn: int) -> int:
        """A batch ending at `end_lsn` went to the asyncio side; returns its seq, the
        number its acknowledgement will carry."""
        return self._add(end_lsn, needs_ack=True)

    def nothing_to_hand(self, end_lsn: int) -> None:
        """Transactions up to `end_lsn` had nothing for us: confirmable in order."""
        self._add(end_lsn, needs_ack=False)

    def _add(self, end_lsn: int, needs_ack: bool) -> int:
        seq = self._next_seq
        self._pending.append(_Handed(seq, end_lsn, needs_ack))
        self._next_seq += 1
        return seq

    @property
    def in_flight(self) -> int:
        """Batches handed over and not yet acknowledged (what back-pressure counts)."""
        return sum(1 for p in self._pending if p.needs_ack)

    def acknowledged(self, acked_seq: int) -> bool:
        """Every batch up to `acked_seq` was delivered: release them, and those needing
        no acknowledgement, in order. Returns whether `acked_lsn` moved."""
        pending, acked = self._pending, self.acked_lsn
        while pending and (not pending[0].needs_ack or pending[0].seq <= acked_seq):
            acked = max(acked, pending.popleft().end_lsn)
        if acked > self.acked_lsn:
            self.acked_lsn = acked
            return True
        return False

    @property
    def behind(self) -> bool:
        """Acknowledged further than confirmed: a confirmation is owed."""
        return self.acked_lsn > self.confirmed_lsn

    def confirmation_due(self, now: float, force: bool = False) -> int | None:
        """The position to send as flushed now, or None (nothing owed, or too soon
        after the previous confirmation and not `force`d)."""
        if self.behind and (force or now - self._last_feedback >= self.min_feedback_interval):
            return self.acked_lsn
        return None

    def confirmed(self, lsn: int, now: float) -> None:
        """`lsn` was sent as flushed at `now`."""
        self.confirmed_lsn = max(self.confirmed_lsn, lsn)
        self._last_feedback = now

    def keepalive_due(self, now: float) -> bool:
        """Nothing moves (back-pressure): whether to send a keepalive now."""
        return now - self._last_feedback >= self.status_interval / 2

    def kept_alive(self, now: float) -> None:
        self._last_feedback = now
