"""End live subscriptions whose channel was deleted, disabled or re-patterned.

After any channel change, each subscription is matched again against the enabled
channels (same specificity rules as subscribing); one whose governing channel is
gone or different is ended with a frame that says why. One Revalidator per process
runs every check: awaited by the REST handler that made the change (so its caller's
subscriptions are ended before the response), and requested by the channels-changed
NOTIFY for changes made elsewhere (SQL, other processes). The NOTIFY of this process's
own change carries its origin and is skipped: one re-check per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

import asyncpg

from pgrealtime.db import errors as db_errors
from pgrealtime.engine.channels import most_specific

log = logging.getLogger(__name__)


async def revalidate_subscriptions(sessions: Collection[Any], pool: asyncpg.Pool) -> int:
    """End the subscriptions of `sessions` (each with `.subscriptions` and
    `.end_subscription`) whose governing channel changed; returns how many."""
    if not any(s.subscriptions for s in sessions):
        return 0
    rows = await pool.fetch("SELECT id, pattern FROM realtime.channels WHERE enabled")
    by_pattern = {row["pattern"]: str(row["id"]) for row in rows}
    ended = 0
    for session in list(sessions):
        for channel, subscription in list(session.subscriptions.items()):
            if subscription.channel_id is None:
                continue  # db: subscriptions are not governed by channel rows
            pattern = most_specific(by_pattern, channel)
            if pattern is not None and by_pattern[pattern] == subscription.channel_id:
                continue
            session.end_subscription(
                channel, "Subscription ended: its channel was deleted, disabled or changed"
            )
            ended += 1
    return ended


class Revalidator:
    """Runs `revalidate_subscriptions` when told that channels changed elsewhere (a
    NOTIFY from another process or from SQL); changes that arrive during a run are
    folded into one more run."""

    def __init__(self, sessions: Collection[Any], pool: asyncpg.Pool) -> None:
        self.sessions = sessions  # the live sessions of this process
        self.pool = pool
        self._task: asyncio.Task | None = None
        self._again = False
        self.ended = 0  # subscriptions ended so far (for metrics)

    async def now(self) -> int:
        """Re-check at once and wait for it (after a change this process made)."""
        ended = await revalidate_subscriptions(self.sessions, self.pool)
        self.ended += ended
        return ended

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="revalidate-subscriptions")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.now()
            except db_errors.FAILED as exc:
                log.warning("subscriptions not re-checked after a channel change: %s", exc)
            if not self._again:
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
