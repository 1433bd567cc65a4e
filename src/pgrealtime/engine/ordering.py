"""Hand stored messages to local subscribers in position order, once each, and record
how many got each one.

Both paths end here: publishes made on this process, and messages other writers
committed (SQL `realtime.publish()`, other server processes) that the listener reads.
Every message carries its channel's position (1, 2, 3, ... committed in order, see
db/functions/messages_before_insert.sql), so for a channel with subscribers a position
at or below the last one handed out is a duplicate, and a position beyond the next one
is a gap: the missing messages are already committed, so they are read from the table
before going on.
Audience counts are written in batches off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

import asyncpg

from pgrealtime.db import errors as db_errors
from pgrealtime.engine.hub import Hub, Outbox
from pgrealtime.engine.messages import SELECT_MESSAGES, StoredMessage, stored_message_from_row

log = logging.getLogger(__name__)

TRACKED_CHANNELS = 100_000  # last positions remembered for channels nobody watches


# What one collected message is counted as besides its payload (ids, names, header):
# the bound is on memory, so a flood of empty payloads is bounded too.
HELD_OVERHEAD = 256


class Recovery:
    """One subscriber resuming a channel: collects the channel's messages, in order,
    while it reads its history; then forwards those past the history's last position
    until this process has handed that position out itself, and joins the hub.

    What it collects is bounded by `max_held_bytes`: past it, everything collected is
    dropped and `overflowed` set, and the resume reads the dropped range back from the
    table (`Subscriptions._resume`): every message is stored, with its position, before
    it is handed out, so a busy channel costs the resume reads, never memory or a
    message."""

    __slots__ = ("channel", "floor", "held_bytes", "max_held_bytes", "messages", "outbox",
                 "overflowed")  # fmt: skip

    def __init__(self, channel: str, max_held_bytes: int = 0) -> None:
        self.channel = channel
        self.messages: list[StoredMessage] = []
        self.outbox: Outbox | None = None  # set once the history was sent
        self.floor = 0  # the last position this subscriber has
        self.max_held_bytes = max_held_bytes  # 0: no bound
        self.held_bytes = 0
        self.overflowed = False  # messages were dropped: read them from the table

    def collect(self, message: StoredMessage) -> None:
        """Keep `message` for `go_live`, or drop everything once past the bound."""
        if self.overflowed:
            return
        self.messages.append(message)
        self.held_bytes += len(message.payload_json) + HELD_OVERHEAD
        if self.max_held_bytes and self.held_bytes > self.max_held_bytes:
            self.messages = []
            self.held_bytes = 0
            self.overflowed = True

    def restart_collecting(self) -> None:
        """The dropped messages are being read from the table: collect anew."""
        self.overflowed = False


class _Gap:
    """Messages held back on one channel until the missing positions are read."""

    __slots__ = ("held", "task")

    def __init__(self) -> None:
        self.held: dict[int, StoredMessage] = {}  # by position
        self.task: asyncio.Task | None = None


class Ordering:
    """Per channel: the last position handed out, gaps being filled, resumes joining;
    hands each stored message to the hub once, in order (one per process)."""

    def __init__(
        self,
        hub: Hub,
        pool: asyncpg.Pool,
        flush_interval: float = 0.2,
    ) -> None:
        self.hub = hub
        self.pool = pool
        self.flush_interval = flush_interval
        self._last: OrderedDict[str, int] = OrderedDict()  # channel -> last position handed out
        self._gaps: dict[str, _Gap] = {}
        self._recoveries: dict[str, list[Recovery]] = {}
        self._counts: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self.gaps_filled = 0  # messages read back from the table to close a gap
        # frames queued to subscribers since start (metrics, the dashboard's
        # deliveries/s): one addition per message fanned out, never per delivery
        self.delivered = 0

    # -- positions ------------------------------------------------------------
    def last_position(self, channel: str) -> int | None:
        return self._last.get(channel)

    def start_tracking(self, channel: str, position: int) -> None:
        """A first subscriber: live delivery goes on from `position` unless this
        process already knows where the channel stands."""
        if channel not in self._last:
            self._advance(channel, position)

    def tracked(self) -> list[tuple[str, int]]:
        """(channel, last position) for every channel someone here is watching."""
        return [(c, p) for c, p in self._last.items() if self._watched(c)]

    def _watched(self, channel: str) -> bool:
        return self.hub.subscriber_count(channel) > 0 or channel in self._recoveries

    def _advance(self, channel: str, position: int) -> None:
        self._last[channel] = position
        self._last.move_to_end(channel)
        if len(self._last) > TRACKED_CHANNELS:
            oldest = next(iter(self._last))
            if not self._watched(oldest):
                del self._last[oldest]

    # -- delivering -----------------------------------------------------------
    def deliver(self, message: StoredMessage) -> int:
        """Fan out in position order; a message already handed out here is skipped."""
        channel = message.channel
        last = self._last.get(channel)
        if not self._watched(channel):
            if last is None or message.position > last:
                self._advance(channel, message.position)
            return 0
        if last is not None and message.position <= last:
            return 0
        gap = self._gaps.get(channel)
        if gap is not None or (last is not None and message.position > last + 1):
            self._hold(channel, message, gap)
            return 0
        return self._hand_out(message)

    def _hand_out(self, message: StoredMessage) -> int:
        channel = message.channel
        self._advance(channel, message.position)
        audience = self.hub.broadcast(channel, message)
        recoveries = self._recoveries.get(channel)
        if recoveries:
            audience += self._offer(recoveries, message)
        if audience:
            self._counts[message.id] = self._counts.get(message.id, 0) + audience
            self.delivered += audience
            if self.hub.latency_sample is None:
                self.hub.latency_sample = message.created_at
        return audience

    def _hold(self, channel: str, message: StoredMessage, gap: _Gap | None) -> None:
        if gap is None:
            gap = self._gaps[channel] = _Gap()
        gap.held[message.position] = message
        if gap.task is None:
            gap.task = asyncio.create_task(self._fill(channel, gap), name=f"gap:{channel}")

    async def _fill(self, channel: str, gap: _Gap) -> None:
        """Read the missing positions, then hand out everything held, in order. What
        arrives meanwhile is held too, and may show a further gap: go round again."""
        while gap.held:
            last = self._last.get(channel, 0)
            upto = max(gap.held)
            rows = await self._read_between(channel, last, upto)
            for row in rows:
                gap.held.setdefault(row["position"], stored_message_from_row(row))
            self.gaps_filled += len(rows)
            # Up to `upto`, a position still missing was removed (retention, DELETE
            # /messages): go past it.
            for position in sorted(p for p in gap.held if p <= upto):
                message = gap.held.pop(position)
                if position > self._last.get(channel, 0):
                    self._hand_out(message)
        del self._gaps[channel]

    async def _read_between(self, channel: str, after: int, before: int) -> list:
        delay = 0.05
        while True:
            try:
                return await self.pool.fetch(
                    SELECT_MESSAGES + " WHERE channel_name = $1 AND position > $2"
                    " AND position < $3 ORDER BY position",
                    channel,
                    after,
                    before,
                )
            except db_errors.FAILED as exc:
                log.warning("gap on %s not filled yet: %s", channel, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- recovery (subscribe with `since`) ----------------------------------
    def begin_recovery(self, channel: str, max_held_bytes: int = 0) -> Recovery:
        """Collect `channel`'s messages for a resuming subscriber, at most
        `max_held_bytes` of them (0: no bound) before falling back on the table."""
        recovery = Recovery(channel, max_held_bytes)
        self._recoveries.setdefault(channel, []).append(recovery)
        return recovery

    def go_live(self, recovery: Recovery, outbox: Outbox, floor: int) -> None:
        """The subscriber has every message up to `floor` (its history): send what
        was collected past it, then live messages, each exactly once."""
        assert not recovery.overflowed  # the dropped range is read from the table first
        for message in recovery.messages:
            if message.position > floor:
                outbox.send(message.frame_for(outbox.codec))
                floor = message.position
        recovery.messages = []
        recovery.held_bytes = 0
        if self._last.get(recovery.channel, 0) >= floor:
            self.end_recovery(recovery)
            self.hub.subscribe(recovery.channel, outbox)
        else:  # its history is ahead of what this process has handed out so far
            recovery.outbox = outbox
            recovery.floor = floor

    def _offer(self, recoveries: list[Recovery], message: StoredMessage) -> int:
        sent = 0
        for recovery in list(recoveries):
            if recovery.outbox is None:
                recovery.collect(message)
                continue
            if message.position > recovery.floor:
                recovery.outbox.send(message.frame_for(recovery.outbox.codec))
                recovery.floor = message.position
                sent += 1
            if message.position >= recovery.floor:  # caught up: plain fan-out from now
                self.end_recovery(recovery)
                self.hub.subscribe(recovery.channel, recovery.outbox)
        return sent

    def end_recovery(self, recovery: Recovery) -> None:
        recoveries = self._recoveries.get(recovery.channel, [])
        if recovery in recoveries:
            recoveries.remove(recovery)
        if not recoveries:
            self._recoveries.pop(recovery.channel, None)

    # -- audience counts ------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="audience-counts")

    async def stop(self) -> None:
        # The loop is asked to end, not cancelled: a cancelled UPDATE may still commit,
        # and its counts, put back for the final flush, would be added twice.
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):  # the loop logged its own errors
                await self._task
        for gap in list(self._gaps.values()):
            if gap.task is not None:
                gap.task.cancel()
        await self.flush()

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
            try:
                await self.flush()
            except db_errors.FAILED as exc:
                log.warning("audience counts not written yet: %s", exc)

    async def flush(self) -> None:
        """Write pending wsAudienceCount values in one statement."""
        if not self._counts:
            return
        counts, self._counts = self._counts, {}
        try:
            await self.pool.execute(
                "UPDATE realtime.messages m SET ws_audience_count = m.ws_audience_count + v.n"
                " FROM unnest($1::uuid[], $2::int[]) AS v(id, n) WHERE m.id = v.id",
                list(counts),
                list(counts.values()),
            )
        except Exception:  # not written: keep them for the next try
            for key, value in counts.items():
                self._counts[key] = self._counts.get(key, 0) + value
            raise
