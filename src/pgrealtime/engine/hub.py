"""Local fan-out: channel name -> the connections subscribed to it on this process.

A message is encoded once per protocol into one WebSocket frame; the same bytes are
queued on each subscriber's outbox with no await per subscriber. A channel's
subscribers are grouped by their protocol's codec, so with two protocols a message
costs two encodings and one dict lookup per protocol, never a lookup per delivery.
Outboxes are flushed together, joining what is pending for a connection into one write: a loopback
write costs ~8 us of kernel time on a small VM, Python's share per delivery is
well under 1 us, so fewer writes is the way to go fast.

When outboxes are flushed is the one trade-off of latency for CPU:

- `flush_interval=0` (the default): at the end of the event-loop tick that queued
  something. Messages settled in the same tick share a write; at moderate rates
  each message costs one write per subscriber.
- `flush_interval>0`: at most once per interval, and at once (end of tick) when the
  previous flush is older than that. A lone message goes out as fast as before; a
  stream faster than one message per interval per connection is joined into one
  write per interval, so CPU per delivery falls as the rate rises, at the cost of
  up to one interval of added latency.

A subscriber whose unsent bytes stay above the limit for a whole sweep interval is
cut loose, never slowing the rest; a burst that a live reader drains is tolerated.
One whose unsent bytes pass twice the limit after a write is cut at once: between
two sweeps a stalled reader could otherwise collect any amount. Both checks read the
transport's buffer once per write (per connection per flush), never per delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class Outbox:
    """One connection's pending outgoing frames.

    `pending` is None (nothing queued: no list kept per idle connection), one frame
    (the common case: written as is, nothing joined) or a list of frames. `codec` is
    the connection's protocol (engine/messages.py Codec): what fan-out encodes for it."""

    __slots__ = ("closed", "codec", "hub", "on_overflow", "pending", "transport")

    def __init__(
        self,
        hub: Hub,
        transport: Transport,
        on_overflow: Callable[[], None],
        codec: Any = None,
    ) -> None:
        self.hub = hub
        self.codec = codec
        self.transport = transport
        self.on_overflow = on_overflow
        self.pending: bytes | list[bytes] | None = None
        self.closed = False

    def send(self, frame: bytes) -> None:
        """Queue a complete WebSocket frame; it is written by the next flush."""
        if self.closed:
            return
        pending = self.pending
        if pending is None:
            self.pending = frame
            self.hub.mark_dirty(self)
        elif type(pending) is bytes:
            self.pending = [pending, frame]
        else:
            pending.append(frame)

    def flush(self) -> None:
        """Write what is queued now (before a close frame, for instance)."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if not self.closed:
            self._write(pending)

    def _write(self, pending: bytes | list[bytes]) -> None:
        transport = self.transport
        if transport.is_closing():
            self.closed = True
            return
        try:
            transport.write(pending if type(pending) is bytes else b"".join(pending))
        except Exception:  # a peer that reset must not stop the broadcast to the rest
            self.closed = True
            return
        backlog = transport.get_write_buffer_size()
        if backlog > self.hub.send_buffer_limit:
            if backlog > self.hub.hard_limit:
                self.cut()  # checked after the write: the kernel's share is not counted
            else:
                self.hub.suspect(self)

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size()

    def check_backlog(self) -> None:
        """Still behind a sweep later: this reader cannot keep up."""
        if self.closed:
            return
        if self.transport.get_write_buffer_size() > self.hub.send_buffer_limit:
            self.cut()

    def cut(self) -> None:
        """Stop queueing for this reader and let its connection drop what it holds."""
        self.closed = True
        self.pending = None
        self.hub.slow_cuts += 1
        self.on_overflow()


class Hub:
    def __init__(
        self, send_buffer_limit: int, sweep_seconds: float = 1.0, flush_interval: float = 0.0
    ) -> None:
        """`flush_interval` (seconds): see the module docstring; 0 flushes every tick."""
        self.send_buffer_limit = send_buffer_limit
        self.hard_limit = 2 * send_buffer_limit  # cut at once past this, no sweep's grace
        self.sweep_seconds = sweep_seconds
        self.flush_interval = flush_interval
        # channel -> codec -> its subscribers speaking that protocol
        self._channels: dict[str, dict[Any, set[Outbox]]] = {}
        self._dirty: list[Outbox] = []
        self._flush_scheduled = False
        self._last_flush = float("-inf")
        self._suspects: set[Outbox] = set()
        self._sweep_scheduled = False
        self.slow_cuts = 0  # readers cut for falling behind (for metrics)
        # The created_at of a message queued since the last flush, and who is told
        # when it was written: one delivery latency sample per flush, not per message
        # (set by Ordering, read by observe/metrics through `on_flushed`).
        self.latency_sample: datetime | None = None
        self.on_flushed: Callable[[datetime], None] | None = None

    def suspect(self, outbox: Outbox) -> None:
        """An outbox over its limit right after a write gets a sweep's grace."""
        self._suspects.add(outbox)
        if not self._sweep_scheduled:
            self._sweep_scheduled = True
            asyncio.get_running_loop().call_later(self.sweep_seconds, self._sweep)

    def _sweep(self) -> None:
        self._sweep_scheduled = False
        suspects, self._suspects = self._suspects, set()
        for outbox in suspects:
            outbox.check_backlog()

    def subscribe(self, channel: str, outbox: Outbox) -> None:
        self._channels.setdefault(channel, {}).setdefault(outbox.codec, set()).add(outbox)

    def unsubscribe(self, channel: str, outbox: Outbox) -> None:
        groups = self._channels.get(channel)
        if groups is None:
            return
        subscribers = groups.get(outbox.codec)
        if subscribers is not None:
            subscribers.discard(outbox)
            if not subscribers:
                del groups[outbox.codec]
                if not groups:
                    del self._channels[channel]

    def is_subscribed(self, channel: str, outbox: Outbox) -> bool:
        return outbox in self._channels.get(channel, {}).get(outbox.codec, ())

    def subscriber_count(self, channel: str) -> int:
        return sum(len(s) for s in self._channels.get(channel, {}).values())

    def subscribers(self, channel: str) -> list[Outbox]:
        """Every outbox subscribed to `channel`, whatever its protocol."""
        return [o for group in self._channels.get(channel, {}).values() for o in group]

    def channel_names(self) -> list[str]:
        return list(self._channels)

    def broadcast(self, channel: str, item: Any) -> int:
        """Queue `item` (a StoredMessage or ChannelEvent: anything with
        `frame_for(codec)`) for every subscriber of `channel`; returns how many. Bytes
        are queued as they are for every protocol (tests, single-protocol tools).

        The inner loop is `Outbox.send` inlined: it runs once per delivery, and a
        method call per subscriber costs as much as the rest of the loop body."""
        groups = self._channels.get(channel)
        if not groups:
            return 0
        dirty = self._dirty
        raw = type(item) is bytes
        count = 0
        for codec, subscribers in groups.items():
            frame = item if raw else item.frame_for(codec)
            count += len(subscribers)
            for outbox in subscribers:
                pending = outbox.pending
                if pending is None:
                    if not outbox.closed:
                        outbox.pending = frame
                        dirty.append(outbox)
                elif type(pending) is bytes:
                    outbox.pending = [pending, frame]
                else:
                    pending.append(frame)
        if dirty and not self._flush_scheduled:
            self._schedule_flush()
        return count

    def mark_dirty(self, outbox: Outbox) -> None:
        self._dirty.append(outbox)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        if self.flush_interval > 0:
            due = self._last_flush + self.flush_interval
            if due > loop.time():
                loop.call_at(due, self._flush)
                return
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.flush_interval > 0:
            self._last_flush = asyncio.get_running_loop().time()
        dirty = self._dirty
        self._dirty = []
        for outbox in dirty:  # Outbox.flush inlined, for the same reason as broadcast
            pending = outbox.pending
            if pending is not None:
                outbox.pending = None
                if not outbox.closed:
                    outbox._write(pending)
        sample = self.latency_sample
        if sample is not None:
            self.latency_sample = None
            if self.on_flushed is not None:
                self.on_flushed(sample)
