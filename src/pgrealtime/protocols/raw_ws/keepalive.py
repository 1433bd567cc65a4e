"""The WebSocket heartbeat for every connection of the process, on one timer.

aiohttp's own heartbeat keeps a timer per connection (about 540 bytes each, and a
callback per connection per period). Here one sweep every half period looks at each
connection's last inbound frame: silent for a whole period, it is pinged; a ping still
unanswered at the next sweep means a dead peer, and its connection is cut. Anything
the peer sends counts as an answer, a pong or a frame.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

PING_FRAME = b"\x89\x00"  # FIN + ping, no payload, unmasked (server to client)
SLICE = 500  # connections checked per event-loop turn


class Pingable(Protocol):
    last_heard: float  # loop time of the last inbound frame
    pinged_at: float  # loop time of an unanswered ping, 0.0 if none

    def ping(self) -> None: ...
    def cut(self) -> None: ...


class Keepalive:
    def __init__(self, period: float) -> None:
        """`period` seconds of silence before a ping; 0 turns the heartbeat off."""
        self.period = period
        self.connections: set[Pingable] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Pingable) -> None:
        if self.period <= 0:
            return
        self.connections.add(connection)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.period / 2, self._sweep)

    def discard(self, connection: Pingable) -> None:
        self.connections.discard(connection)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._check(loop.time(), list(self.connections), 0)
        self._timer = None
        if self.connections:
            self._timer = loop.call_later(self.period / 2, self._sweep)

    def _check(self, now: float, connections: list[Pingable], start: int) -> None:
        """Check a slice, then let other work run before the next: each ping is a
        socket write, and thousands at once would stall every other connection."""
        for connection in connections[start : start + SLICE]:
            if connection not in self.connections:
                continue  # closed meanwhile
            if connection.pinged_at:
                if connection.last_heard < connection.pinged_at:
                    self.connections.discard(connection)
                    connection.cut()  # no answer for half a period: a dead peer
                    continue
                connection.pinged_at = 0.0
            if now - connection.last_heard >= self.period:
                connection.pinged_at = now
                connection.ping()
        if start + SLICE < len(connections):
            asyncio.get_running_loop().call_soon(self._check, now, connections, start + SLICE)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
