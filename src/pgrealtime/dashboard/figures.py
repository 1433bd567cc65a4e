"""One snapshot of a running server for the dashboard: read from what the parts keep.

Nothing here counts anything: it reads totals the publisher, the delivery order, the
change feed and the hub already hold (each counted per batch, never per delivery) and
asks PostgreSQL one bounded question (the webhook queue). Totals, not rates: a viewer
divides the difference between two snapshots by the difference of `monotonicSeconds`,
so any number of viewers polling at any pace each get true rates.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgrealtime.changes.feed import ChangeFeed
from pgrealtime.changes.route import DbChannels
from pgrealtime.db import errors as db_errors
from pgrealtime.engine.bus.base import Bus
from pgrealtime.engine.hub import Hub
from pgrealtime.engine.ordering import Ordering
from pgrealtime.engine.presence import Presence
from pgrealtime.engine.publisher import Publisher

# The busiest channels listed (by local subscribers); the rest are only counted. A
# snapshot is polled every second: listing 100,000 channels would cost more than it shows.
MAX_CHANNELS = 100
# Pending webhook deliveries are counted up to this (then shown as "at least"): a
# count(*) over a huge backlog would scan all of it on every poll.
MAX_COUNTED_PENDING = 10_000
QUERY_TIMEOUT_SECONDS = 2.0

_PENDING = (
    "SELECT count(*) FROM (SELECT 1 FROM realtime.webhook_deliveries"
    " WHERE status = 'pending' LIMIT $1) AS p"
)


@dataclass(frozen=True, slots=True)
class Parts:
    """What a snapshot reads: the server's parts, as app.py built them."""

    hub: Hub
    db_channels: DbChannels
    publisher: Publisher
    delivery: Ordering
    feed: ChangeFeed | None
    listener: Bus | None
    pool: asyncpg.Pool
    connections: int  # live WebSocket sessions of this process
    presence: Presence | None = None  # None with --no-presence


def channels(hub: Hub, db_channels: DbChannels) -> list[tuple[int, str]]:
    """(local subscribers, name) of every channel that has some, busiest first (name
    order among equals); `db:` channels counted per table."""
    counted = [(hub.subscriber_count(name), name) for name in hub.channel_names()]
    counted += [(count, name) for name, count in db_channels.subscriber_counts().items()]
    counted.sort(key=lambda item: (-item[0], item[1]))
    return counted


async def webhook_queue(pool: asyncpg.Pool) -> dict[str, Any]:
    """Pending deliveries (due now or in backoff), counted up to MAX_COUNTED_PENDING."""
    try:
        pending = await asyncio.wait_for(
            pool.fetchval(_PENDING, MAX_COUNTED_PENDING + 1), QUERY_TIMEOUT_SECONDS
        )
    except (TimeoutError, *db_errors.FAILED):
        return {"pending": None, "pendingCapped": False}
    return {
        "pending": min(pending, MAX_COUNTED_PENDING),
        "pendingCapped": pending > MAX_COUNTED_PENDING,
    }


def change_feed(feed: ChangeFeed | None) -> dict[str, Any]:
    """The feed's own health (state, lag in bytes, problems), or why there is none."""
    if feed is None:
        return {"enabled": False, "reason": "off (--no-changes)", "state": "disabled"}
    return feed.status()


async def snapshot(parts: Parts) -> dict[str, Any]:
    """The dashboard's figures now (docs/operating.md, "Dashboard", lists them)."""
    counted = channels(parts.hub, parts.db_channels)
    listener = parts.listener
    feed = change_feed(parts.feed)
    return {
        "monotonicSeconds": time.monotonic(),
        "connections": parts.connections,
        "published": sum(parts.publisher.published.values()),
        "delivered": parts.delivery.delivered,
        "changesDelivered": feed.get("delivered_changes") or 0,
        "channels": [{"name": name, "subscribers": n} for n, name in counted[:MAX_CHANNELS]],
        "channelsWithSubscribers": len(counted),
        "listener": None
        if listener is None
        else ("connected" if listener.connected.is_set() else "reconnecting"),
        "changes": feed,
        "webhooks": await webhook_queue(parts.pool),
        # members per listed channel (one per user); null with --no-presence
        "presence": None
        if parts.presence is None
        else {name: parts.presence.store.member_count(name) for _, name in counted[:MAX_CHANNELS]},
    }
