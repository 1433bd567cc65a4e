"""Noticing that a failing webhook host answers again (pure: no I/O, times are given).

While a host is down, its deliveries fail again and again and their backoff grows to
a minute and more. Once it answers, that backoff no longer protects anyone: the
backlog should go out at the worker's pace, not as each delivery's wait runs out. So
the worker pulls the host's deliveries in backoff forward (makes them due now) once
per recovery, that is, on the first success after an outage.

An outage is a run of failed attempts to the host with no success in between, the
first and the last of which began at least `min_outage` seconds apart. A delivery
that fails while others to the same host succeed (a receiver bug on one payload)
makes no such run, so its backoff is left alone. Shorter outages are not worth it:
the backoff steps they produce are about as long as the outage itself.

Attempts under way when the host recovers can fail after the pull-forward, and would
keep their long backoff: `failed` says so, so the worker makes those due too.

Waits a receiver asked for (Retry-After) are neither failures of a run nor moved.
Host, as for the per-host concurrency limit: an outage is nearly always the host's
(refused connections, timeouts, a 502/503 from its load balancer), and the host
column is what the deliveries table keeps for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_MIN_OUTAGE = 5.0
MAX_FAILING_HOSTS = 10_000  # hosts tracked at once; the oldest run is forgotten first


@dataclass(slots=True)
class _Run:
    """Failed attempts to one host with no success in between."""

    first: float  # when the first of them began
    last: float  # when the latest of them began


class HostRecovery:
    """Per-host outage bookkeeping of one worker (one process)."""

    def __init__(self, min_outage: float = DEFAULT_MIN_OUTAGE, straggle: float = 60.0) -> None:
        self._min_outage = min_outage
        self._straggle = straggle  # how long after a recovery a late failure can arrive
        self._runs: dict[str, _Run] = {}
        self._recovered: dict[str, float] = {}  # host -> when its last outage ended

    def failed(self, host: str, started: float) -> bool:
        """An attempt to `host` begun at `started` failed and waits out a backoff step.
        True when it began before the host's last recovery: it failed with the outage
        and must be made due like the rest. Otherwise it extends the host's run."""
        if started < self._recovered.get(host, -math.inf):
            return True
        run = self._runs.get(host)
        if run is None:
            if len(self._runs) >= MAX_FAILING_HOSTS:
                del self._runs[next(iter(self._runs))]
            self._runs[host] = _Run(started, started)
        else:
            run.first = min(run.first, started)
            run.last = max(run.last, started)
        return False

    def succeeded(self, host: str, now: float) -> bool:
        """An attempt to `host` succeeded at `now`. True when that ends an outage: the
        caller then makes the host's deliveries in backoff due (once per outage)."""
        run = self._runs.pop(host, None)
        if run is None or run.last - run.first < self._min_outage:
            return False
        self._recovered = {h: t for h, t in self._recovered.items() if now - t < self._straggle}
        self._recovered[host] = now
        return True
