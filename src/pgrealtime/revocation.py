"""End live subscriptions whose channel was deleted, disabled or re-patterned.

After any channel change, each subscription is matched again against the enabled
channels (same specificity rules as subscribing); one whose governing channel is
gone or different is ended with a frame that says why.
"""

from __future__ import annotations

from aiohttp import web

from pgrealtime.channels import most_specific


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
