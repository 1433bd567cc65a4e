"""Local fan-out: channel name -> the connections subscribed to it on this process.

A message is encoded once into one WebSocket frame; the same bytes are appended to
each subscriber's outbox with no await per subscriber. Each outbox is flushed at
most once per event-loop tick, joining what is pending into one write: the kernel's
per-write cost dominates broadcast CPU, so fewer writes is the way to go fast.
A subscriber whose unsent bytes stay above the limit for a whole sweep interval is
cut loose, never slowing the rest; a burst that a live reader drains is tolerated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class Outbox:
    """One connection's pending outgoing frames."""

    __slots__ = ("closed", "hub", "on_overflow", "pending", "transport")

    def __init__(self, hub: Hub, transport: Transport, on_overflow: Callable[[], None]) -> None:
        self.hub = hub
        self.transport = transport
        self.on_overflow = on_overflow
        self.pending: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes) -> None:
        """Queue a complete WebSocket frame; it is written by the next flush."""
        if self.closed:
            return
        if not self.pending:
            self.hub.mark_dirty(self)
        self.pending.append(frame)

    def flush(self) -> None:
        pending = self.pending
        self.pending = []
        if self.closed or not pending:
            return
        if self.transport.is_closing():
            self.closed = True
            return
        try:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        except Exception:  # a peer that reset must not stop the broadcast to the rest
            self.closed = True
            return
        if self.transport.get_write_buffer_size() > self.hub.send_buffer_limit:
            self.hub.suspect(self)

    def check_backlog(self) -> None:
        """Still behind a sweep later: this reader cannot keep up."""
        if self.closed:
            return
        if self.transport.get_write_buffer_size() > self.hub.send_buffer_limit:
            self.closed = True
            self.pending = []
            self.on_overflow()


class Hub:
    def __init__(self, send_buffer_limit: int, sweep_seconds: float = 1.0) -> None:
        self.send_buffer_limit = send_buffer_limit
        self.sweep_seconds = sweep_seconds
        self._channels: dict[str, set[Outbox]] = {}
        self._dirty: list[Outbox] = []
        self._flush_scheduled = False
        self._suspects: set[Outbox] = set()
        self._sweep_scheduled = False

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
        self._channels.setdefault(channel, set()).add(outbox)

    def unsubscribe(self, channel: str, outbox: Outbox) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.discard(outbox)
            if not subscribers:
                del self._channels[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def channel_names(self) -> list[str]:
        return list(self._channels)

    def broadcast(self, channel: str, frame: bytes) -> int:
        """Queue `frame` for every subscriber of `channel`; returns how many."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        for outbox in subscribers:
            outbox.send(frame)
        return len(subscribers)

    def mark_dirty(self, outbox: Outbox) -> None:
        self._dirty.append(outbox)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        self._dirty = []
        for outbox in dirty:
            outbox.flush()
