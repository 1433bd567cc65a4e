"""Connections that must authenticate in time, on one timer for the process.

A connection that never sends a valid `auth` costs a session, a socket and a place in
every cap, for as long as it keeps talking (ping frames keep the heartbeat happy).
Every connection gets the same timeout, so deadlines come in accept order: a queue,
with one timer set for its head, costs O(1) per connection and nothing per frame.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol


class Deadlined(Protocol):
    def auth_deadline_passed(self, timeout: float) -> None:
        """Close unless authenticated (and still open); called once."""


class Ticket:
    """A place in the queue; `cancel()` once the connection authenticated or closed, so
    the queue does not keep a closed connection's objects alive until its deadline."""

    __slots__ = ("connection",)

    def __init__(self, connection: Deadlined) -> None:
        self.connection: Deadlined | None = connection

    def cancel(self) -> None:
        self.connection = None


class AuthDeadlines:
    def __init__(self, timeout: float) -> None:
        """`timeout` seconds from accept to a successful auth; 0 turns it off."""
        self.timeout = timeout
        self._queue: deque[tuple[float, Ticket]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Deadlined) -> Ticket | None:
        """Watch `connection`; None when there is no timeout."""
        if self.timeout <= 0:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        ticket = Ticket(connection)
        self._queue.append((deadline, ticket))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire)
        return ticket

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._queue
        while queue and queue[0][0] <= now:
            connection = queue.popleft()[1].connection
            if connection is not None:
                connection.auth_deadline_passed(self.timeout)
        self._timer = loop.call_at(queue[0][0], self._fire) if queue else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
