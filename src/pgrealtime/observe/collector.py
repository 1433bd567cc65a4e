"""Scrape-time figures: read from the server's parts when Prometheus asks.

Nothing here runs on a message's path. The parts keep plain counters (an integer
added to per batch) or know the figure already; this collector walks them once per
scrape. Walking every live session (authenticated or not, subscriptions, bytes held
in its socket's buffer) costs about a microsecond per connection per scrape.

Protocols are a parameter: each one's live sessions register under its own label
(`ServerParts.protocols`), so a second protocol adds a row, not code here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prometheus_client.core import Metric

from pgrealtime.observe import metrics as m


class ProtocolSessions(Protocol):
    """What a protocol's session registry shows: its live sessions (each with
    `principal`, `subscriptions` and `outbox`), connections accepted so far, and
    connections it cut by reason."""

    live: Collection[Any]
    opened: int
    ended: Counter[str]


@dataclass
class ServerParts:
    """The parts a scrape reads; None for a part that is not built (yet, or at all)."""

    protocols: dict[str, ProtocolSessions] = field(default_factory=dict)
    hub: Any = None  # engine/hub.Hub
    ordering: Any = None  # engine/ordering.Ordering
    publisher: Any = None  # engine/publisher.Publisher
    pool: Any = None  # asyncpg.Pool
    listener: Any = None  # engine/bus/pg_notify.Listener
    feed: Any = None  # changes/feed.ChangeFeed
    db_channels: Any = None  # changes/route.DbChannels
    webhooks: Any = None  # webhooks/worker.WebhookWorker
    expiry: Any = None  # the session's ExpiryClock
    revalidator: Any = None  # engine/revocation.Revalidator
    errors: Counter[str] | None = None  # error frames sent, by code (SessionContext)
    database: Any = None  # observe/database.DatabaseFigures


Samples = list[tuple[tuple[str, ...], float]]


class PartsCollector:
    """A prometheus_client collector over the parts `get_parts()` returns."""

    def __init__(self, get_parts: Callable[[], ServerParts]) -> None:
        self._get_parts = get_parts

    def describe(self) -> list[Metric]:
        return []  # built at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        p = self._get_parts()
        yield from m.families(
            [
                *self._sessions(p),
                *self._messages(p),
                *self._database(p),
                *self._changes(p),
                *self._webhooks(p),
            ]
        )

    @staticmethod
    def _sessions(p: ServerParts) -> list[tuple[m.Spec, Samples]]:
        connections: Samples = []
        sessions: Samples = []
        opened: Samples = []
        channel_subs = table_subs = held = 0
        ended: Counter[str] = Counter()
        for protocol, registry in p.protocols.items():
            live = list(registry.live)
            connections.append(((protocol,), len(live)))
            sessions.append(((protocol,), sum(1 for s in live if s.principal is not None)))
            opened.append(((protocol,), registry.opened))
            ended.update(registry.ended)
            for session in live:
                for subscription in session.subscriptions.values():
                    if subscription.table is None:
                        channel_subs += 1
                    else:
                        table_subs += 1
                outbox = session.outbox
                if not outbox.closed:
                    held += outbox.backlog()
        if p.hub is not None:
            ended["slow_reader"] += p.hub.slow_cuts
        if p.expiry is not None:
            ended["token_expired"] += p.expiry.expired
        for reason in ("slow_reader", "token_expired", "auth_timeout", "no_pong"):
            ended.setdefault(reason, 0)
        out: list[tuple[m.Spec, Samples]] = [
            (m.CONNECTIONS, connections),
            (m.SESSIONS, sessions),
            (m.CONNECTIONS_OPENED, opened),
            (m.SUBSCRIPTIONS, [(("channel",), channel_subs), (("table",), table_subs)]),
            (m.DISCONNECTS, [((reason,), n) for reason, n in sorted(ended.items())]),
            (m.SEND_BUFFER, [((), held)]),
        ]
        if p.hub is not None:
            out.append((m.CHANNELS_WITH_SUBSCRIBERS, [((), len(p.hub.channel_names()))]))
        if p.revalidator is not None:
            out.append((m.SUBSCRIPTIONS_ENDED, [(("channel_changed",), p.revalidator.ended)]))
        return out

    @staticmethod
    def _messages(p: ServerParts) -> list[tuple[m.Spec, Samples]]:
        sources = ("websocket", "socketio", "sql", "peer", "changes")  # listed even at 0
        published: Counter[str] = Counter(dict.fromkeys(sources, 0))
        refused: Counter[str] = Counter()
        if p.publisher is not None:
            published.update(p.publisher.published)
            refused.update(p.publisher.refused)
        if p.listener is not None:
            published.update(p.listener.published)
        deliveries: Samples = []
        if p.ordering is not None:
            deliveries.append((("message",), p.ordering.delivered))
        if p.db_channels is not None:
            published["changes"] += p.db_channels.changes_sent
            deliveries.append((("change",), p.db_channels.delivered))
        out: list[tuple[m.Spec, Samples]] = [
            (m.PUBLISHED, [((source,), n) for source, n in sorted(published.items())]),
            (m.REFUSED, [((reason,), n) for reason, n in sorted(refused.items())]),
            (m.DELIVERIES, deliveries),
        ]
        if p.errors is not None:
            errors = [((str(code),), n) for code, n in sorted(p.errors.items())]
            out.append((m.ERROR_FRAMES, errors))
        if p.ordering is not None:
            out.append((m.GAP_READS, [((), p.ordering.gaps_filled)]))
        return out

    @staticmethod
    def _database(p: ServerParts) -> list[tuple[m.Spec, Samples]]:
        out: list[tuple[m.Spec, Samples]] = []
        if p.database is not None and p.database.up is not None:
            out.append((m.DATABASE_UP, [((), 1.0 if p.database.up else 0.0)]))
        pool = p.pool
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            out += [
                (m.POOL_CONNECTIONS, [(("in_use",), size - idle), (("idle",), idle)]),
                (m.POOL_MAX, [((), pool.get_max_size())]),
                (m.POOL_WAITING, [((), pool_waiting(pool))]),
            ]
        listener = p.listener
        if listener is not None:
            out += [
                (m.LISTENER_CONNECTED, [((), 1.0 if listener.connected.is_set() else 0.0)]),
                (m.LISTENER_RECONNECTS, [((), listener.outages)]),
                (m.LISTENER_CAUGHT_UP, [((), listener.caught_up)]),
            ]
        return out

    @staticmethod
    def _changes(p: ServerParts) -> list[tuple[m.Spec, Samples]]:
        out: list[tuple[m.Spec, Samples]] = []
        if p.db_channels is not None:
            rls = p.db_channels.rls
            out += [(m.RLS_CHECKS, [((), rls.checked)]), (m.RLS_DENIED, [((), rls.denied)])]
        feed = p.feed
        if feed is None:
            return out
        status = feed.status()
        out += [
            (m.FEED_STREAMING, [((), 1.0 if status.get("state") == "streaming" else 0.0)]),
            (m.CHANGES_DECODED, [((), feed.decoded_changes)]),
            (m.CHANGES_PROCESSED, [((), feed.delivered_changes)]),
            (m.CHANGES_SKIPPED, [((), status.get("skipped_changes") or 0)]),
        ]
        if status.get("lag_bytes") is not None:
            out.append((m.FEED_LAG_BYTES, [((), status["lag_bytes"])]))
        lag = feed_lag_seconds(feed.last_handover)
        if lag is not None:
            out.append((m.FEED_LAG_SECONDS, [((), lag)]))
        return out

    @staticmethod
    def _webhooks(p: ServerParts) -> list[tuple[m.Spec, Samples]]:
        out: list[tuple[m.Spec, Samples]] = []
        if p.webhooks is not None:
            outcomes = Counter({"delivered": 0, "retry": 0, "failed": 0, "dead": 0})
            outcomes.update(p.webhooks.outcomes)
            out.append((m.WEBHOOK_OUTCOMES, [((k,), n) for k, n in sorted(outcomes.items())]))
        queue = None if p.database is None else p.database.webhook_queue
        if queue is not None:
            due, waiting, oldest = queue
            out += [
                (m.WEBHOOK_QUEUE, [(("due",), due), (("waiting",), waiting)]),
                (m.WEBHOOK_OLDEST, [((), oldest)]),
            ]
        return out


def pool_waiting(pool: Any) -> int:
    """Tasks waiting in `pool.acquire()`. asyncpg has no public figure for it: its
    pool hands out connections through an asyncio.Queue, whose waiting getters are
    counted here (0 if that ever changes, never an error)."""
    getters = getattr(getattr(pool, "_queue", None), "_getters", None)
    return sum(1 for g in getters if not g.done()) if getters else 0


def feed_lag_seconds(last: tuple[str, float] | None) -> float | None:
    """(commit timestamp of the last change handed over, when it was handed over) as
    seconds between the two; None before the first batch."""
    if last is None:
        return None
    commit, handed_at = last
    try:
        committed = datetime.fromisoformat(commit).timestamp()
    except ValueError:  # 'infinity' and other timestamps with no instant
        return None
    return max(0.0, handed_at - committed)
