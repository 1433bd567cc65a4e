"""Joining a channel's delivery: the one entry point that changes hub membership.

`subscribe(principal, channel, since, sink)` authorizes (engine/authorize.py), then
joins the channel's live fan-out at once, or, with `since`, after sending the history
past it (engine/resume.py) and what arrived meanwhile (Ordering's recovery hands the
outbox to the hub once it has caught up, so every position goes out once, in order).
`leave(membership)` undoes it. The caller, a session of any protocol, keeps its own
records through its `Sink`: it accepts the subscription (and answers its client)
before any history is sent, says whether it still wants it between pages, and hears
when a resume failed half-way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from pgrealtime.auth.principal import Principal
from pgrealtime.db import errors as db_errors
from pgrealtime.engine.authorize import SubscribeChecks
from pgrealtime.engine.hub import Hub, Outbox
from pgrealtime.engine.ordering import Ordering, Recovery
from pgrealtime.engine.resume import HistoryPlan, plan_history, plan_range, read_page

log = logging.getLogger(__name__)

RESUME_POLL_SECONDS = 0.02  # how often a paged resume looks whether its reader caught up


class Refused(Exception):
    """Not authorized: `status` is 'no_channel' or 'denied' (engine/authorize.py)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(slots=True)
class Membership:
    """A subscriber's place in a channel's delivery, until `leave`."""

    channel: str
    outbox: Outbox
    recovery: Recovery | None = None  # set while a resume catches up with live messages


class Sink(Protocol):
    outbox: Outbox

    def accept(self, channel_id: str, membership: Membership, plan: HistoryPlan | None) -> Any:
        """Record the subscription and answer it, before any history is sent; returns
        a token for `wanted`, or None when it is not wanted any more (the connection
        closed, or the channel was subscribed meanwhile)."""

    def wanted(self, token: Any) -> bool:
        """Still subscribed with `token` (not unsubscribed, ended or cut)."""

    def lost(self, token: Any, exc: BaseException) -> None:
        """The resume failed after `accept` (`exc`: a db_errors.transient one is
        answered here and not raised): forget the subscription; the engine has left
        the channel."""


class Subscriptions:
    def __init__(
        self,
        hub: Hub,
        ordering: Ordering,
        pool: asyncpg.Pool,
        checks: SubscribeChecks,
        *,
        recoveries: asyncio.Semaphore,
        max_recover: int,
        max_recover_bytes: int,
        max_recover_live_bytes: int = 0,
        read_timeout: float | None = None,
    ) -> None:
        self.hub = hub
        self.ordering = ordering
        self.pool = pool
        self.checks = checks
        self.recoveries = recoveries  # history reads in flight for the whole process
        self.max_recover = max_recover
        self.max_recover_bytes = max_recover_bytes
        # live messages one resume collects while it reads history (0: no bound)
        self.max_recover_live_bytes = max_recover_live_bytes
        # one history read (a page, or its plan): past it the database is taken for
        # unavailable and the subscription ends with SERVICE_UNAVAILABLE
        self.read_timeout = read_timeout

    async def subscribe(
        self, principal: Principal, channel: str, since: int | str | None, sink: Sink
    ) -> Membership | None:
        """Raises Refused, or db_errors.UNAVAILABLE before anything was accepted;
        None when the sink no longer wanted it."""
        check = await self.checks.check(principal, channel)
        if check.status != "ok":
            raise Refused(check.status)
        assert check.channel_id is not None
        self.ordering.start_tracking(channel, check.position)
        if since is None:
            membership = Membership(channel, sink.outbox)
            if sink.accept(check.channel_id, membership, None) is None:
                return None
            self.hub.subscribe(channel, sink.outbox)
            return membership
        recovery = self.ordering.begin_recovery(channel, self.max_recover_live_bytes)
        try:
            return await self._resume(channel, check.channel_id, since, check.position,
                                      recovery, sink)  # fmt: skip
        finally:
            # Whatever happened, a recovery that did not go live collects nothing more
            # (one that did belongs to its membership until it catches up).
            if recovery.outbox is None:
                self.ordering.end_recovery(recovery)

    async def _resume(
        self,
        channel: str,
        channel_id: str,
        since: int | str,
        current: int,
        recovery: Recovery,
        sink: Sink,
    ) -> Membership | None:
        """History past `since`, then what arrived while reading it, then live: the
        positions make the seam exact (no gap, no duplicate)."""
        outbox = sink.outbox
        async with self.recoveries:
            plan = await plan_history(self.pool, channel, since, current, self.max_recover,
                                      self.max_recover_bytes, self._page_bytes(),
                                      self.read_timeout)  # fmt: skip
        membership = Membership(channel, outbox, recovery)
        token = sink.accept(channel_id, membership, plan)
        if token is None:
            return None
        floor = plan.position  # the last position sent (or skipped as removed)
        try:
            if not await self._send_pages(channel, plan.pages, sink, token):
                return membership  # unsubscribed, ended or cut meanwhile
            while recovery.overflowed:  # live messages were dropped: read them back
                upto = self.ordering.last_position(channel) or floor
                recovery.restart_collecting()  # what is handed out from here is > upto
                while floor < upto:
                    async with self.recoveries:
                        pages = await plan_range(self.pool, channel, floor, upto,
                                                 self._page_bytes(), self.read_timeout)  # fmt: skip
                    if not pages:
                        break
                    if not await self._send_pages(channel, pages, sink, token):
                        return membership
                    floor = pages[-1][1]
                floor = max(floor, upto)
        except BaseException as exc:
            if sink.wanted(token):
                self.leave(membership)
            sink.lost(token, exc)
            if db_errors.transient(exc):
                log.warning("resume failed: %s", exc)
                return None
            raise
        # No await from the overflow check on: nothing slips in between history and live.
        if sink.wanted(token) and not outbox.closed:
            self.ordering.go_live(recovery, outbox, floor)
        return membership

    async def _send_pages(
        self, channel: str, pages: list[tuple[int, int]], sink: Sink, token: Any
    ) -> bool:
        """Read and send `pages` in order, each once the connection has room; False
        if the subscription or the connection ended meanwhile."""
        outbox = sink.outbox
        for first, last in pages:
            if not await self._room_for_a_page(sink, token):
                return False
            async with self.recoveries:
                messages = await read_page(self.pool, channel, first, last, self.read_timeout)
            codec = outbox.codec
            for message in messages:
                outbox.send(message.frame_for(codec))
            outbox.flush()
        return True

    def leave(self, membership: Membership) -> None:
        if membership.recovery is not None:
            self.ordering.end_recovery(membership.recovery)
        self.hub.unsubscribe(membership.channel, membership.outbox)

    def _page_bytes(self) -> int:
        """A page written on top of at most half the limit stays within it: no reader
        that keeps up is suspected, let alone cut, because of its own resume."""
        return max(1, self.hub.send_buffer_limit // 2)

    async def _room_for_a_page(self, sink: Sink, token: Any) -> bool:
        """Wait until the connection has taken all but half the limit of what it was
        sent; False if the subscription or the connection ended meanwhile."""
        outbox = sink.outbox
        room = self._page_bytes()
        # polled: a transport has no awaitable for "below N bytes", only aiohttp's
        # private drain at its own low-water mark
        while not outbox.closed and outbox.backlog() > room:  # noqa: ASYNC110
            await asyncio.sleep(RESUME_POLL_SECONDS)
        return not outbox.closed and sink.wanted(token)
