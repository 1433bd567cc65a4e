"""`db:<table>` subscriptions: who listens to which table, and delivering change batches.

The change feed hands over committed batches in commit order; routing (filters and
row-level security, one query per batch per table) lives in pgrealtime.changes. Each
change's frame is encoded once and written to every subscriber allowed to see it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from pgrealtime.auth.principal import Principal
from pgrealtime.changes.cluster import ClusterFeed
from pgrealtime.changes.committed import wait_committed
from pgrealtime.changes.feed import ChangeFeed
from pgrealtime.changes.filters import ChangeFilter
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.tables import TableAllowList
from pgrealtime.changes.visibility import (
    RlsCounts,
    RoutedChange,
    authorize_subscription,
    batch_readers,
    route_batch,
)
from pgrealtime.engine.hub import Outbox

log = logging.getLogger(__name__)


class ChangesUnavailable(Exception):
    """Change notifications are off on this server; the message says why."""


@dataclass(eq=False)
class TableSubscriber:
    """One `db:` subscription. `claims` are the caller's current claims: a new `auth`
    frame of the same identity replaces them (`refresh_claims`), since row level
    security is checked with them on every batch."""

    role: str
    claims: str
    filter: ChangeFilter
    outbox: Outbox
    key: tuple[str, str] = field(default=("", ""))


class DbChannels:
    def __init__(
        self,
        pool: asyncpg.Pool,
        feed: ChangeFeed | ClusterFeed | None,
        publication: str,
        allowed: TableAllowList | None = None,
    ) -> None:
        self.pool = pool
        self.feed = feed
        self.publication = publication
        self.allowed = allowed or None  # an empty list allows every table
        self._by_table: dict[tuple[str, str], set[TableSubscriber]] = {}
        # for metrics, counted per batch: changes sent (to one subscriber or more),
        # frames queued, and the row level security checks made
        self.changes_sent = 0
        self.delivered = 0
        self.rls = RlsCounts()

    def has_subscribers(self) -> bool:
        """Anyone here subscribed to a table (else relayed changes need no decoding)."""
        return bool(self._by_table)

    def unavailable_reason(self) -> str | None:
        if self.feed is None:
            return "Database change notifications are not enabled on this server"
        status = self.feed.status()
        if not status.get("enabled"):
            return f"Database change notifications are off: {status.get('reason')}"
        return None

    async def subscribe(
        self, principal: Principal, channel: str, raw_filter: Any, outbox: Outbox
    ) -> TableSubscriber:
        """Authorize and register; raises ChangesUnavailable, FilterError or
        SubscriptionDenied (each with a `code` for the error frame)."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise ChangesUnavailable(reason)
        table = await authorize_subscription(
            self.pool,
            principal.role,
            principal.claims_json,
            channel,
            raw_filter,
            publication=self.publication,
            allowed=self.allowed,
        )
        subscriber = TableSubscriber(
            principal.role, principal.claims_json, table.filter, outbox, (table.schema, table.table)
        )
        self._by_table.setdefault(subscriber.key, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: TableSubscriber) -> None:
        subscribers = self._by_table.get(subscriber.key)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_table[subscriber.key]

    def subscriber_counts(self) -> dict[str, int]:
        """`db:` channel name -> local subscribers (for the dashboard). One name per
        table: `db:table` in schema public, `db:schema.table` elsewhere."""
        return {
            f"db:{table}" if schema == "public" else f"db:{schema}.{table}": len(subscribers)
            for (schema, table), subscribers in self._by_table.items()
        }

    @staticmethod
    def refresh_claims(subscriber: TableSubscriber, principal: Principal) -> None:
        """The caller sent a new token of the same identity: check its rows with the new
        claims from the next batch on (table privileges belong to the role, which is
        unchanged, and are checked again on every batch anyway)."""
        subscriber.role = principal.role
        subscriber.claims = principal.claims_json

    async def _readers(self, changes: list[RowChange]) -> dict[tuple[str, str], frozenset[str]]:
        """The roles allowed on each table of the batch that has subscribers, checked now
        (one query per batch; none when no table of the batch is subscribed to). Rows
        are checked against row level security as they are now, so the checked
        transactions must be visible first (see changes/committed.py): the same query
        says which still run, and only then is there more to wait for."""
        wanted: dict[tuple[str, str], set[str]] = {}
        checked: dict[tuple[str, str], set[int]] = {}
        for change in changes:
            key = (change.schema, change.table)
            subscribers = self._by_table.get(key)
            if not subscribers:
                continue
            if key not in wanted:
                wanted[key] = {s.role for s in subscribers}
            if change.rls and change.event in ("INSERT", "UPDATE"):
                checked.setdefault(key, set()).add(change.xid)
        if not wanted:
            return {}
        readers, running = await batch_readers(self.pool, wanted, checked)
        if running:
            await wait_committed(self.pool, running)
        return readers

    async def deliver(self, changes: list[RowChange]) -> None:
        """Route one batch; returning acknowledges it to the feed. Only subscribers whose
        role may still read the table are candidates (a REVOKE since they subscribed
        stops their deliveries; a GRANT back resumes them)."""
        if not self._by_table:
            return
        readers = await self._readers(changes)
        if not readers:
            return

        def candidates(schema: str, table: str) -> Sequence[TableSubscriber]:
            roles = readers.get((schema, table))
            if not roles:
                return ()
            return [
                s
                for s in self._by_table.get((schema, table), ())
                if s.role in roles and not s.outbox.closed
            ]

        routed = await route_batch(self.pool, changes, candidates, self.rls)
        self.changes_sent += len(routed)
        self.delivered += sum(len(delivery.subscribers) for delivery in routed)
        for delivery in routed:
            body = self._encode(delivery)
            frames: dict = {}  # codec -> this change's frame in its protocol, made once
            for subscriber in delivery.subscribers:
                codec = subscriber.outbox.codec
                frame = frames.get(codec)
                if frame is None:
                    frame = frames[codec] = codec.change(body)
                subscriber.outbox.send(frame)

    def _encode(self, delivery: RoutedChange) -> bytes:
        """The change's frame, once for all its subscribers. A value orjson will not
        write (the reader already keeps deep JSON as text; this is the backstop) costs
        its column, which is left out of `new`/`old` (counted), never the batch."""
        frame = {
            "type": "message",
            "channel": delivery.channel,
            "event": delivery.change.event,
            "payload": delivery.payload,
        }
        try:
            return orjson.dumps(frame)
        except (orjson.JSONEncodeError, TypeError):
            pass
        payload = dict(delivery.payload)
        for part in ("new", "old"):
            row = payload.get(part)
            if not isinstance(row, dict):
                continue
            kept = {}
            for column, value in row.items():
                try:
                    orjson.dumps(value)
                except (orjson.JSONEncodeError, TypeError):
                    self._left_out(delivery, column)
                    continue
                kept[column] = value
            payload[part] = kept
        frame["payload"] = payload
        return orjson.dumps(frame)

    def _left_out(self, delivery: RoutedChange, column: str) -> None:
        change = delivery.change
        detail = f"column {change.schema}.{change.table}.{column} left out: not encodable"
        if self.feed is not None and self.feed.skips is not None:
            self.feed.skips.add("unencodable_columns", detail)
        else:
            log.warning("change feed: %s", detail)
