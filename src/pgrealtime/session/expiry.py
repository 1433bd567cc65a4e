"""Token expiry for every session of the process, on one timer.

A `loop.call_later` per session costs about 540 bytes per connection (the handle and
its place in the loop's heap), for an event that most connections never reach. Here a
session joins the set of its deadline (a JWT `exp` is a whole second, so sessions share
sets), and one timer, armed for the earliest deadline, expires a whole set at once.
A session that closes or re-authenticates leaves its set, so nothing keeps it alive.
The same clock, with another action, sends the warnings before expiry
(session/refresh.py).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import Any, Protocol


class Expiring(Protocol):
    def on_token_expired(self) -> None: ...


def _expire(session: Any) -> None:
    session.on_token_expired()


class ExpiryClock:
    def __init__(self, fire: Callable[[Any], None] = _expire) -> None:
        self._action = fire  # what a deadline does to each of its sessions
        self._due: dict[float, set[Expiring]] = {}  # deadline (epoch s) -> sessions
        self._deadlines: list[float] = []  # heap of the keys of _due
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.expired = 0  # sessions whose token ran out (for metrics)

    def add(self, session: Expiring, deadline: float) -> None:
        sessions = self._due.get(deadline)
        if sessions is None:
            sessions = self._due[deadline] = set()
            heapq.heappush(self._deadlines, deadline)
            if deadline < self._timer_at:
                self._arm(deadline)
        sessions.add(session)

    def remove(self, session: Expiring, deadline: float) -> None:
        sessions = self._due.get(deadline)
        if sessions is not None:
            sessions.discard(session)  # an empty set goes when its deadline comes

    def watched(self) -> int:
        return sum(len(sessions) for sessions in self._due.values())

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, deadline - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)
        self._timer_at = deadline

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.time()
        while self._deadlines and self._deadlines[0] <= now:
            deadline = heapq.heappop(self._deadlines)
            for session in list(self._due.pop(deadline, ())):
                self.expired += 1
                self._action(session)
        if self._deadlines:
            self._arm(self._deadlines[0])  # also re-arms a timer that fired early

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
