"""Every metric the server exports, declared once, and the registry that serves them.

Two kinds, chosen by what each costs on the paths that carry messages:

- Counters and gauges read at scrape time (`Spec`): the parts keep plain integer
  attributes (`Hub.slow_cuts`, `Ordering.delivered`, `Publisher.published`, ...) or
  already know the figure (open connections, pool size, change-feed lag); the
  collector (`observe/collector.py`) turns them into samples when Prometheus asks.
  Keeping one costs an integer addition per batch, never a lock or a label lookup.
- Histograms, observed per batch or per flush, never per delivery: one delivery
  latency sample per hub flush, one publish batch per round trip, one webhook attempt.

One `Metrics` per server (its own `CollectorRegistry`, not the library's global one):
two servers in one process (the tests) keep apart, and nothing is counted twice.
`snapshot()` gives the current values as a flat dict, for in-process readers such as
the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from prometheus_client import (
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


@dataclass(frozen=True)
class Spec:
    """A metric read at scrape time. Counter names are given without `_total` (the
    library adds it to the sample)."""

    name: str
    help: str
    kind: Literal["counter", "gauge"]
    labels: tuple[str, ...] = ()

    def family(self) -> CounterMetricFamily | GaugeMetricFamily:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return cls(self.name, self.help, labels=list(self.labels))


# --- connections and subscriptions --------------------------------------------------
CONNECTIONS = Spec("pgrealtime_connections", "Open client connections.", "gauge", ("protocol",))
SESSIONS = Spec(
    "pgrealtime_sessions", "Open connections that have authenticated.", "gauge", ("protocol",)
)
CONNECTIONS_OPENED = Spec(
    "pgrealtime_connections_opened", "Client connections accepted.", "counter", ("protocol",)
)
SUBSCRIPTIONS = Spec(
    "pgrealtime_subscriptions",
    "Live subscriptions: kind=channel (pub/sub) or kind=table (db: change channels).",
    "gauge",
    ("kind",),
)
CHANNELS_WITH_SUBSCRIBERS = Spec(
    "pgrealtime_channels_with_subscribers",
    "Channel names with at least one live subscriber on this process.",
    "gauge",
)
DISCONNECTS = Spec(
    "pgrealtime_disconnects",
    "Connections the server cut: slow_reader (send buffer full), token_expired,"
    " auth_timeout (no auth frame in time), no_pong (a dead peer).",
    "counter",
    ("reason",),
)
SUBSCRIPTIONS_ENDED = Spec(
    "pgrealtime_subscriptions_ended",
    "Subscriptions the server ended: channel_changed (channel deleted, disabled or"
    " re-patterned: the subscription lost its right to the channel).",
    "counter",
    ("reason",),
)
SEND_BUFFER = Spec(
    "pgrealtime_send_buffer_bytes",
    "Bytes written to client connections and not yet taken by the kernel.",
    "gauge",
)

# --- messages -------------------------------------------------------------------------
PUBLISHED = Spec(
    "pgrealtime_messages_published",
    "Messages stored (source=websocket, socketio: publishes of this process's clients;"
    " sql: realtime.publish() in the database; peer: another server process) and change"
    " messages made from row changes (source=changes).",
    "counter",
    ("source",),
)
REFUSED = Spec(
    "pgrealtime_messages_refused",
    "Publishes that reached the database and were not stored: reason=denied (the"
    " policies), no_channel, unavailable (retryable), failed (a database error such as"
    " an application trigger), error (the batch failed otherwise).",
    "counter",
    ("reason",),
)
ERROR_FRAMES = Spec(
    "pgrealtime_error_frames",
    "Error frames sent to clients, by code (publish refusals before the database, such"
    " as RATE_LIMITED or INVALID_PAYLOAD, are counted here).",
    "counter",
    ("code",),
)
DELIVERIES = Spec(
    "pgrealtime_deliveries",
    "Live frames queued to subscribers: kind=message (channel messages), kind=change"
    " (db:); history sent on a resume is not counted.",
    "counter",
    ("kind",),
)
GAP_READS = Spec(
    "pgrealtime_gap_messages_read",
    "Messages read back from the table to close a gap in a channel's positions.",
    "counter",
)

# --- database -----------------------------------------------------------------------
DATABASE_UP = Spec(
    "pgrealtime_database_up",
    "1 if the database answered this scrape's query (as /health asks), else 0.",
    "gauge",
)
POOL_CONNECTIONS = Spec(
    "pgrealtime_db_pool_connections",
    "Connections of the PostgreSQL pool: state=in_use or idle.",
    "gauge",
    ("state",),
)
POOL_MAX = Spec("pgrealtime_db_pool_max_connections", "The pool's size limit.", "gauge")
POOL_WAITING = Spec(
    "pgrealtime_db_pool_waiting", "Tasks waiting for a connection of the pool.", "gauge"
)
LISTENER_CONNECTED = Spec(
    "pgrealtime_listener_connected",
    "1 while the LISTEN connection (messages of other writers) is up.",
    "gauge",
)
LISTENER_RECONNECTS = Spec(
    "pgrealtime_listener_reconnects", "LISTEN connections lost (then re-made).", "counter"
)
LISTENER_CAUGHT_UP = Spec(
    "pgrealtime_listener_caught_up_messages",
    "Messages read after a LISTEN reconnect (committed while it was down).",
    "counter",
)

# --- change feed ------------------------------------------------------------------------
FEED_STREAMING = Spec(
    "pgrealtime_change_feed_streaming",
    "1 while the change feed streams from its replication slot; 0 when off, stopped or"
    " reconnecting.",
    "gauge",
)
FEED_LAG_BYTES = Spec(
    "pgrealtime_change_feed_lag_bytes",
    "WAL bytes the replication slot holds that the server has not confirmed (checked"
    " every 5 s): the disk PostgreSQL cannot free.",
    "gauge",
)
FEED_LAG_SECONDS = Spec(
    "pgrealtime_change_feed_lag_seconds",
    "Commit to hand-over of the last change batch delivered, in seconds.",
    "gauge",
)
CHANGES_DECODED = Spec(
    "pgrealtime_changes_decoded",
    "Row changes decoded from the WAL (a batch read again after a failure counts again).",
    "counter",
)
CHANGES_PROCESSED = Spec(
    "pgrealtime_changes_processed",
    "Row changes handed to routing and acknowledged to the slot.",
    "counter",
)
CHANGES_SKIPPED = Spec(
    "pgrealtime_changes_skipped",
    "Row changes left out after failing again and again (see /health's change feed).",
    "counter",
)
RLS_CHECKS = Spec(
    "pgrealtime_rls_checks",
    "Row visibility checks made for db: subscribers (one per row and distinct viewer).",
    "counter",
)
RLS_DENIED = Spec(
    "pgrealtime_rls_denied",
    "Row visibility checks that row level security answered with no.",
    "counter",
)

# --- webhooks ---------------------------------------------------------------------------
WEBHOOK_QUEUE = Spec(
    "pgrealtime_webhook_queue_depth",
    "Pending webhook deliveries in the database (every process's): state=due (to send"
    " now) or waiting (a retry's backoff, or claimed and being sent).",
    "gauge",
    ("state",),
)
WEBHOOK_OLDEST = Spec(
    "pgrealtime_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery (0 when none).",
    "gauge",
)
WEBHOOK_OUTCOMES = Spec(
    "pgrealtime_webhook_deliveries",
    "Webhook attempts of this process by outcome: delivered, retry (will be tried again),"
    " failed (refused for good: a 4xx or a forbidden address), dead (retries ran out:"
    " a dead letter).",
    "counter",
    ("outcome",),
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """One server's registry: the histograms below, the process collector (CPU,
    memory, open files), and the collectors `add`ed at assembly."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivery_latency = Histogram(
            "pgrealtime_delivery_latency_seconds",
            "From a message's created_at (the start of the transaction that stored it:"
            " the server's own short INSERT, or the application's transaction for SQL"
            " publishes) to the write of its frame to subscriber sockets; one sample per"
            " flush of the fan-out.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_batch_size = Histogram(
            "pgrealtime_publish_batch_size",
            "Publishes stored together in one round trip.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.publish_store_seconds = Histogram(
            "pgrealtime_publish_store_seconds",
            "Time of one publish batch's round trip to PostgreSQL.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_attempt_seconds = Histogram(
            "pgrealtime_webhook_attempt_seconds",
            "Time of one webhook HTTP attempt, whatever its outcome.",
            buckets=WEBHOOK_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    # hooks the parts call (per flush, per batch, per attempt)
    def flushed(self, created_at: datetime) -> None:
        """The hub wrote a flush holding a message created at `created_at`."""
        self.delivery_latency.observe(max(0.0, time.time() - created_at.timestamp()))

    def publish_batch(self, size: int, seconds: float) -> None:
        self.publish_batch_size.observe(size)
        self.publish_store_seconds.observe(seconds)

    def webhook_attempt(self, seconds: float) -> None:
        self.webhook_attempt_seconds.observe(seconds)

    def snapshot(self) -> dict[str, float]:
        return snapshot(self.registry)


def snapshot(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample now, as {'name{label="value",...}': value}: the figures a page or a
    test reads without parsing the text exposition."""
    return {_key(s.name, s.labels): s.value for m in registry.collect() for s in m.samples}


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def families(specs: Iterable[tuple[Spec, Iterable[tuple[tuple[str, ...], float]]]]) -> list[Metric]:
    """Scrape-time families from (spec, [(label values, value), ...])."""
    out: list[Metric] = []
    for spec, samples in specs:
        family = spec.family()
        for labels, value in samples:
            family.add_metric(list(labels), value)
        out.append(family)
    return out
