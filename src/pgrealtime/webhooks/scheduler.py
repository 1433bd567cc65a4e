"""Which claimed webhook deliveries start now, and when to claim more (pure).

The claim loop (`worker.py`) leases deliveries from PostgreSQL and sends them; this
decides everything in between, without I/O, tasks or a clock of its own (the loop
passes `now`), so the rules are tested on their own (tests/webhooks/test_scheduler.py):

- Concurrency is capped overall (`max_concurrency`) and per target host
  (`per_host`), so a slow receiver holds at most `per_host` requests and cannot starve
  the others. Hosts take turns (round robin) when the overall cap is what binds.
- Claims run ahead: a host may hold `hold_per_host` deliveries (sending + queued), all
  hosts `hold_total`. A host whose last claim was cut by its room is *backlogged*: when
  its queue runs empty it asks for a refill at once instead of waiting for the poll.
- New work (a NOTIFY, the poll, a retry that came due) is claimed at once when idle,
  at most every `busy_notify_interval` while busy.
- A queued delivery whose lease may run out mid-attempt (`send_by` passed) is never
  started: it is handed back (`expired`), so two processes never send it at once.
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

from pgrealtime.webhooks.payload import WebhookDelivery

MIN_SLEEP = 0.02
# rows leased by one claim at most (the claim scans 4 times as many candidates)
CLAIM_MAX = 128
# new work announced while busy is claimed at most this often (hosts being worked on
# are refilled as they run empty anyway; this is for other hosts)
BUSY_NOTIFY_INTERVAL = 0.05


@dataclass(slots=True)
class Queued:
    """A claimed delivery waiting for a free slot."""

    delivery: WebhookDelivery
    token: uuid.UUID
    send_by: float  # loop time after which the lease may not cover an attempt


@dataclass(slots=True)
class Dispatched:
    """What to do after a scheduling step: start these, hand those back, and whether
    the claim loop should wake (a refill, or a slot freed by an expired lease)."""

    start: list[Queued] = field(default_factory=list)
    expired: list[Queued] = field(default_factory=list)
    wake: bool = False


class HostScheduler:
    """Per-host and overall slots for claimed deliveries; one per worker."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        per_host: int,
        prefetch_per_host: int | None,
        poll_interval: float,
    ) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.per_host = max(1, min(per_host, self.max_concurrency))
        prefetch = self.per_host if prefetch_per_host is None else max(0, prefetch_per_host)
        self.hold_per_host = self.per_host + prefetch  # queued + sending, per host
        self.hold_total = self.max_concurrency + max(prefetch, self.max_concurrency)
        self.poll_interval = poll_interval
        # claimed, not started yet, per host (oldest first)
        self._ready: dict[str, deque[Queued]] = {}
        # per host: queued + sending (what a claim may add to), and sending alone
        self._held: Counter[str] = Counter()
        self.held_total = 0
        self._sending: Counter[str] = Counter()
        self.sending_total = 0
        self._backlogged: set[str] = set()  # hosts whose last claim was cut by their room
        self.new_work = True  # something may be due that no claim has seen
        self.refill = False  # a backlogged host ran empty
        self._last_claim = -1e9
        self.paused = False  # the worker is stopping: nothing more starts

    # -- claiming ----------------------------------------------------------------

    def claim_wanted(self, now: float) -> float:
        """0 when a claim should run now, else seconds to wait before asking again."""
        if self.hold_total - self.held_total <= 0:
            return self.poll_interval if not self.new_work else MIN_SLEEP
        if self.refill or (self.new_work and self.held_total == 0):
            return 0.0
        if self.new_work:
            return max(0.0, self._last_claim + BUSY_NOTIFY_INTERVAL - now)
        return self.poll_interval

    def claiming(self, now: float) -> tuple[int, dict[str, int]]:
        """A claim starts at `now`: how many rows it may lease, and what each host
        holds already (the claim leaves out hosts with no room)."""
        self.refill = self.new_work = False
        self._last_claim = now
        return min(CLAIM_MAX, self.hold_total - self.held_total), dict(self._held)

    @property
    def last_claim(self) -> float:
        return self._last_claim

    def took(self, items: list[Queued], held_before: dict[str, int], now: float) -> Dispatched:
        """Queue what a claim leased, note which hosts have more, start what fits."""
        got: Counter[str] = Counter()
        for item in items:
            host = item.delivery.host
            self._ready.setdefault(host, deque()).append(item)
            self._held[host] += 1
            self.held_total += 1
            got[host] += 1
        for host in set(got) | self._backlogged:
            before = held_before.get(host, 0)
            if before >= self.hold_per_host:
                continue  # left out of this claim: nothing learnt
            if got[host] >= self.hold_per_host - before:
                self._backlogged.add(host)
            else:
                self._backlogged.discard(host)
        return self.dispatch(None, now)

    # -- starting and finishing ---------------------------------------------------

    def dispatch(self, host: str | None, now: float) -> Dispatched:
        """Queued deliveries that have a free slot: those of `host` (its slot was just
        freed), or of every host in turn (after a claim, or when the overall limit was
        what held them back). What it returns as started counts as sending."""
        out = Dispatched()
        if self.paused:
            return out
        hosts = [host] if host is not None else list(self._ready)
        for h in hosts:
            if self.sending_total >= self.max_concurrency:
                break
            queue = self._ready.get(h)
            if queue is None:
                continue
            started = False
            while (
                queue
                and self._sending[h] < self.per_host
                and self.sending_total < self.max_concurrency
            ):
                item = queue.popleft()
                if now > item.send_by:  # its lease may run out mid-attempt
                    self._unhold(h)
                    out.expired.append(item)
                    self.new_work = True
                    out.wake = True
                    continue
                self._sending[h] += 1
                self.sending_total += 1
                out.start.append(item)
                started = True
            if not queue:
                del self._ready[h]
                if h in self._backlogged:
                    self.refill = True
                    out.wake = True
            elif started and host is None:
                self._ready[h] = self._ready.pop(h)  # round robin between hosts
        return out

    def sent(self, host: str, now: float) -> Dispatched:
        """A request to `host` is over: its slot is free for the next one."""
        at_limit = self.sending_total >= self.max_concurrency
        self._sending[host] -= 1
        if self._sending[host] <= 0:
            del self._sending[host]
        self.sending_total -= 1
        self._unhold(host)
        out = self.dispatch(None if at_limit else host, now)
        if host not in self._ready and host in self._backlogged:
            self.refill = True
            out.wake = True
        return out

    def take_back(self) -> list[Queued]:
        """Everything queued and not started (stopping): to be released."""
        items = [q for queue in self._ready.values() for q in queue]
        for q in items:
            self._unhold(q.delivery.host)
        self._ready.clear()
        return items

    def _unhold(self, host: str) -> None:
        self._held[host] -= 1
        if self._held[host] <= 0:
            del self._held[host]
        self.held_total -= 1
