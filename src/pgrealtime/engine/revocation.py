"""End live subscriptions whose channel was deleted, disabled or re-patterned.

After any channel change, each subscription is matched again against the enabled
channels (same specificity rules as subscribing); one whose governing channel is
gone or different is ended with a frame that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiohttp import web

from pgrealtime.engine.channels import most_specific

log = logging.getLogger(__name__)


async def revalidate_subscriptions(app: web.Application) -> int:
    sessions = app["sessions"].live
    if not any(s.subscriptions for s in sessions):
        return 0
    rows = await app["pool"].fetch("SELECT id, pattern FROM realtime.channels WHERE enabled")
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

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._task: asyncio.Task | None = None
        self._again = False

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="revalidate-subscriptions")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await revalidate_subscriptions(self.app)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("subscriptions not re-checked after a channel change: %s", exc)
            if not self._again:
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
