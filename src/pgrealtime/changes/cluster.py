"""`db:` changes on every process of a cluster: one slot reader, changes relayed.

Every process prepares the publication and slot, reads the relay (changes/relay.py)
and takes part in the election of the slot reader (engine/bus/pg_leader.py). The
elected process first reads what its predecessor relayed, then starts the slot reader
from the slot's confirmed position; each batch it reads is written to the relay and
delivered to its own subscribers at once. The others deliver the relayed batches to
theirs; each process checks row level security for its own subscribers.

Exactly once per subscriber: a change is named by (transaction end LSN, place in the
transaction), and every process remembers the last one it delivered. What a new slot
reader reads again (the slot resumes from the last batch its predecessor confirmed,
which may be behind what was relayed), what a failed batch reads again, and a relay
row written twice are all dropped here, so nothing is delivered twice; nothing is
lost, since the slot confirms a batch only after it was relayed and delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pgrealtime.changes.feed import ChangeFeed
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.relay import BUS_POLL_SECONDS, RelayReader, RelayWriter
from pgrealtime.changes.skips import SkipCounter
from pgrealtime.engine.bus.pg_leader import PgLeadership

log = logging.getLogger(__name__)

# A new slot reader waits this long for its predecessor's relayed batches before it
# reads the slot itself (they are dropped if they come later: see the module doc).
CATCH_UP_SECONDS = 5.0
_SKIPPED = 2**62  # "every change of this transaction", for batches nobody here wanted

Handler = Callable[[list[RowChange]], Awaitable[None]]
# a bus's named stream: (name, on_message, on_catch_up) -> send
Stream = Callable[[str, Callable[[bytes], None], Callable[[], None]], Callable[[bytes], None]]


class ClusterFeed:
    """What the server holds of the change feed: `status()` and `skips` as a
    ChangeFeed has them (for DbChannels and /health), `start`/`stop`, and
    `on_batch(handler, wanted)`: the local delivery and whether anyone here
    subscribes to a table now."""

    def __init__(
        self,
        feed: ChangeFeed,
        pool: asyncpg.Pool,
        url: str,
        origin: str,
        *,
        keep_seconds: float,
    ) -> None:
        self.feed = feed
        self.pool = pool
        self.writer = RelayWriter(pool, origin, keep_seconds)
        self.reader = RelayReader(url, origin, self._apply, self._wanted, self._skip_to)
        self.leadership = PgLeadership(
            url, origin, f"changes:{feed.config.slot}", self._elected, self._deposed
        )
        feed.on_batch(self._read_from_slot)
        self._handler: Handler | None = None
        self._wanted_now: Callable[[], bool] = lambda: True
        self._applied: tuple[int, int] = (0, -1)  # (lsn, index) delivered last
        self._lock = asyncio.Lock()  # one batch at a time, in order
        self.duplicates = 0  # changes dropped as delivered already

    def ride(self, stream: Stream) -> None:
        """Relay over a bus (`NatsBus.stream`, before it starts): each row still goes
        to the table (the source of truth, for catch-up), but travels on the bus
        instead of a NOTIFY, and the others deliver it without reading the table,
        which they read only for a gap, a bus outage, or every BUS_POLL_SECONDS."""
        self.writer.send = stream("changes", self.reader.offer, self.reader.catch_up)
        self.reader.poll_seconds = BUS_POLL_SECONDS

    def on_batch(self, handler: Handler, wanted: Callable[[], bool]) -> None:
        self._handler = handler
        self._wanted_now = wanted

    @property
    def skips(self) -> SkipCounter | None:
        return self.feed.skips

    async def start(self) -> None:
        if not await self.feed.prepare():
            return  # the database cannot replicate: status says why
        self.reader.start()
        await self.leadership.start()

    async def stop(self) -> None:
        await self.leadership.stop()  # the leader steps down: its reader stops
        await self.reader.stop()
        await self.feed.stop()

    def status(self) -> dict[str, Any]:
        """The feed's status where this process reads the slot; elsewhere `standby`,
        enabled while the relay is heard (a `db:` subscribe is refused otherwise)."""
        status = self.feed.status()
        if not self.feed.prepared:
            return status
        if not self.leadership.is_leader:
            relayed = self.reader.connected.is_set()
            status = {
                "enabled": relayed,
                "reason": None if relayed else "not connected to the change relay",
                "state": "standby",
                "slot": self.feed.config.slot,
                "publication": self.feed.config.publication,
                "lag_bytes": None,
            }
        status["role"] = "leader" if self.leadership.is_leader else "standby"
        status["relay"] = {
            "connected": self.reader.connected.is_set(),
            "rows_read": self.reader.rows,
            "skipped_rows": self.reader.skipped_rows,
            "left_out_columns": self.writer.left_out,
            "duplicates_dropped": self.duplicates,
            "over_bus": self.writer.send is not None,
            "rows_from_bus": self.reader.offered,
        }
        return status

    def _wanted(self) -> bool:
        return self._wanted_now()

    async def _elected(self) -> None:
        newest = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM realtime.change_relay")
        if not await self.reader.read_up_to(newest, CATCH_UP_SECONDS):
            log.warning("change feed: took the slot before reading every relayed batch")
        self.feed.start_reading()

    async def _deposed(self) -> None:
        await self.feed.stop()

    async def _read_from_slot(self, changes: list[RowChange]) -> None:
        """A batch from the slot: to the relay and to this process's subscribers at
        the same time; returning lets the slot confirm it (so both must be done)."""
        results = await asyncio.gather(
            self.writer.write(changes), self._apply(changes), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _apply(self, changes: list[RowChange]) -> None:
        """Deliver here what was not delivered here yet, in order."""
        assert self._handler is not None
        async with self._lock:
            applied = self._applied
            fresh = [c for c in changes if (c.lsn, c.index) > applied]
            self.duplicates += len(changes) - len(fresh)
            if not fresh:
                return
            await self._handler(fresh)
            last = fresh[-1]
            self._applied = max(self._applied, (last.lsn, last.index))

    def _skip_to(self, end_lsn: int) -> None:
        self._applied = max(self._applied, (end_lsn, _SKIPPED))
