"""The webhook_deliveries table: claiming due deliveries and recording outcomes (SQL).

Rows are the queue. A claim reads due candidates without locking them, picks what fits
the free slots, and locks only those with FOR UPDATE SKIP LOCKED, so concurrent claims
(other tasks, other server processes) never take the same row; it pushes the row's
next_attempt_at forward by a lease: if the claiming process dies, the row simply
becomes due again when the lease runs out. Each claim has a token; an outcome is
written only while the row still carries that token, so a process whose lease ran
out cannot overwrite the newer claim's result.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgrealtime.webhooks.payload import WebhookDelivery

# Only the chosen rows are locked. One another claim holds is skipped; one it has
# leased meanwhile is no longer due when re-checked, so it is left out too.
_LEASE_TEMPLATE = """
UPDATE realtime.webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => {lease}), lease_token = {claim},
    attempts = d.attempts + 1, updated_at = now()
FROM realtime.messages m
  LEFT JOIN realtime.channel_webhook_secrets s ON s.channel_id = m.channel_id
WHERE d.id IN (SELECT id FROM realtime.webhook_deliveries
               WHERE id = ANY({ids}) AND status = 'pending' AND next_attempt_at <= now()
               FOR UPDATE SKIP LOCKED)
  AND m.id = d.message_id
RETURNING d.id, d.url, d.host, d.attempts, m.id AS message_id, m.channel_id, m.channel_name,
          m.event_name, m.payload::text AS payload, m.sender_id, m.sender_type, m.created_at,
          s.secret AS channel_secret
"""

# Lease given ids ($1) for $2 seconds under token $3.
_LEASE = _LEASE_TEMPLATE.format(ids="$1::uuid[]", lease="$2", claim="$3")

# A whole claim in one statement (one round trip, no explicit transaction): due
# candidates, hosts at their limit left out so their backlog cannot hide other hosts'
# deliveries; more than needed are scanned ($2) so a burst for one host still leaves
# room for others. Each host gets at most its free room (hosts in $4 have room $5,
# others $3), oldest first, at most $6 rows in all. Candidates are read without
# locks: locking every scanned row to lease a few made each claim cost hundreds of
# row locks; only the chosen rows are locked (above).
_CLAIM = """
WITH candidates AS (
  SELECT id, host, next_attempt_at FROM realtime.webhook_deliveries
  WHERE status = 'pending' AND next_attempt_at <= now() AND host <> ALL($1::text[])
  ORDER BY next_attempt_at
  LIMIT $2
), ranked AS (
  SELECT c.id, c.next_attempt_at, coalesce(r.room, $3) AS room,
         row_number() OVER (PARTITION BY c.host ORDER BY c.next_attempt_at, c.id) AS n
  FROM candidates c LEFT JOIN unnest($4::text[], $5::integer[]) AS r(host, room)
    ON r.host = c.host
), chosen AS (
  SELECT id FROM ranked WHERE n <= room ORDER BY next_attempt_at LIMIT $6
)""" + _LEASE_TEMPLATE.format(ids="ARRAY(SELECT id FROM chosen)", lease="$7", claim="$8")

# Seconds until the next pending delivery (of a host with room) is due.
_NEXT_DUE = """
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM realtime.webhook_deliveries
WHERE status = 'pending' AND host <> ALL($1::text[])
"""

# Batches of successful attempts (ids, tokens, status codes): see 008_webhooks_fast.sql.
_DELIVERED = "SELECT realtime.webhook_mark_delivered($1::uuid[], $2::uuid[], $3::integer[])"

# Retry after `delay` seconds, but never past the end of the retry period: the last
# try happens at its end. After that, or when the receiver itself asked to wait
# (Retry-After, `strict`) beyond it, the delivery is dead. A wait the receiver asked
# for is kept in retry_not_before, so pulling a recovered host forward leaves it alone.
_RETRY = """
UPDATE realtime.webhook_deliveries
SET updated_at = now(), lease_token = NULL, last_error = $3, last_status_code = $4,
    retry_not_before = CASE WHEN $7 THEN now() + make_interval(secs => $5) END,
    status = CASE
      WHEN now() >= retry_from + make_interval(secs => $6) THEN 'dead'
      WHEN $7 AND now() + make_interval(secs => $5) > retry_from + make_interval(secs => $6)
        THEN 'dead'
      ELSE 'pending' END,
    next_attempt_at = least(now() + make_interval(secs => $5),
                            retry_from + make_interval(secs => $6))
WHERE id = $1 AND lease_token = $2 AND status = 'pending'
RETURNING status
"""

_FINAL = """
UPDATE realtime.webhook_deliveries
SET status = $3, updated_at = now(), lease_token = NULL, last_error = $4, last_status_code = $5
WHERE id = $1 AND lease_token = $2 AND status = 'pending'
"""

_RELEASE = """
UPDATE realtime.webhook_deliveries d
SET next_attempt_at = now(), lease_token = NULL, updated_at = now()
FROM unnest($1::uuid[], $2::uuid[]) AS r(id, token)
WHERE d.id = r.id AND d.lease_token = r.token AND d.status = 'pending'
"""

# Claimed but never sent (queued past its lease budget, or queued at shutdown): the
# attempt it was counted as did not happen.
_RELEASE_UNSENT = """
UPDATE realtime.webhook_deliveries d
SET next_attempt_at = now(), lease_token = NULL, updated_at = now(),
    attempts = greatest(d.attempts - 1, 0)
FROM unnest($1::uuid[], $2::uuid[]) AS r(id, token)
WHERE d.id = r.id AND d.lease_token = r.token AND d.status = 'pending'
"""

_LIST = """
SELECT id, message_id, url, status, attempts, last_error, last_status_code, next_attempt_at,
       delivered_at, created_at, updated_at
FROM realtime.webhook_deliveries WHERE message_id = $1
ORDER BY created_at, url
"""

# The most recently changed deliveries of the given statuses, with the message's channel
# and event (the dashboard's list). Not indexed by updated_at: a scan of the table, once
# per look an operator takes, not per delivery.
_RECENT = """
SELECT d.id, d.message_id, d.url, d.status, d.attempts, d.last_error, d.last_status_code,
       d.next_attempt_at, d.delivered_at, d.created_at, d.updated_at,
       m.channel_name, m.event_name
FROM realtime.webhook_deliveries d JOIN realtime.messages m ON m.id = d.message_id
WHERE d.status = ANY($1::text[])
ORDER BY d.updated_at DESC, d.id
LIMIT $2
"""

# Requeue gives a fresh retry period and attempt count: an operator who asks again
# has usually fixed the receiver.
_REQUEUE = """
UPDATE realtime.webhook_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), retry_from = now(),
    lease_token = NULL, retry_not_before = NULL, updated_at = now()
WHERE message_id = $1 AND status IN ('failed', 'dead')
"""

# Deliveries waiting out a backoff step (tried, not claimed, due later) made due, oldest
# first: next_attempt_at becomes created_at, the key new deliveries get, so the backlog
# goes out in message order. Not those the receiver asked to wait for (Retry-After).
# Rows another statement holds are skipped, not waited for: they are being claimed or
# recorded, and waiting could deadlock. Nothing else changes: they are still claimed
# under a lease like any due row.
_PULL_TEMPLATE = """
WITH pulled AS (
  UPDATE realtime.webhook_deliveries d
  SET next_attempt_at = least(d.created_at, now()), updated_at = now()
  WHERE d.id IN (SELECT id FROM realtime.webhook_deliveries
                 WHERE {which} AND status = 'pending' AND lease_token IS NULL
                   AND attempts > 0 AND next_attempt_at > now()
                   AND (retry_not_before IS NULL OR retry_not_before <= now())
                 {limit}
                 FOR UPDATE SKIP LOCKED)
  RETURNING 1
)
SELECT count(*) FROM pulled
"""
# those of host $1, at most $2 (the soonest due first)
_PULL_HOST = _PULL_TEMPLATE.format(which="host = $1", limit="ORDER BY next_attempt_at LIMIT $2")
# delivery $1 only
_PULL_ONE = _PULL_TEMPLATE.format(which="id = $1", limit="")
PULL_BATCH = 5000

NOTIFY_CHANNEL = "realtime_webhook"


@dataclass(frozen=True)
class Claim:
    """Deliveries leased under one token; `next_due` is seconds until the next pending
    delivery is due (None when there is none), to know how long to sleep."""

    token: uuid.UUID
    deliveries: list[WebhookDelivery]
    next_due: float | None


def rooms(busy: Mapping[str, int], per_host: int) -> tuple[list[str], list[str], list[int]]:
    """Split hosts this process holds deliveries of into those at their limit (left
    out of the claim) and the others with their free room."""
    saturated: list[str] = []
    hosts: list[str] = []
    room: list[int] = []
    for host, n in busy.items():
        if n >= per_host:
            saturated.append(host)
        elif n > 0:
            hosts.append(host)
            room.append(per_host - n)
    return saturated, hosts, room


def _delivery(row: Mapping[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        url=row["url"],
        host=row["host"],
        attempts=row["attempts"],
        message_id=row["message_id"],
        channel_id=row["channel_id"],
        channel_name=row["channel_name"],
        event=row["event_name"],
        payload_json=row["payload"],
        sender_id=row["sender_id"],
        sender_type=row["sender_type"],
        created_at=row["created_at"],
        channel_secret=row["channel_secret"],
    )


async def claim(
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    limit: int,
    per_host: int,
    busy: Mapping[str, int],
    lease_seconds: float,
    scan_factor: int = 4,
    want_next_due: bool = True,
) -> Claim:
    """Lease up to `limit` due deliveries, at most `per_host` per host counting the
    `busy` ones this process already holds. `next_due` is only looked up (one more
    round trip) when the claim came back short and `want_next_due`."""
    token = uuid.uuid4()
    saturated, hosts, room = rooms(busy, per_host)
    async with contextlib.AsyncExitStack() as stack:
        conn = pool
        if isinstance(pool, asyncpg.Pool):
            conn = await stack.enter_async_context(pool.acquire())
        rows = await conn.fetch(
            _CLAIM,
            saturated,
            limit * scan_factor,
            per_host,
            hosts,
            room,
            limit,
            float(lease_seconds),
            token,
        )
        next_due = None
        if len(rows) < limit and want_next_due:
            next_due = await conn.fetchval(_NEXT_DUE, saturated)
    deliveries = sorted((_delivery(r) for r in rows), key=lambda d: (d.created_at, d.url))
    return Claim(token=token, deliveries=deliveries, next_due=next_due)


async def mark_delivered_many(
    pool: asyncpg.Pool | asyncpg.Connection, outcomes: Sequence[tuple[uuid.UUID, uuid.UUID, int]]
) -> int:
    """Record successful attempts (id, claim token, status code) and count them on
    their messages, in one round trip; returns how many still held their claim."""
    if not outcomes:
        return 0
    ids = [o[0] for o in outcomes]
    tokens = [o[1] for o in outcomes]
    codes = [o[2] for o in outcomes]
    return int(await pool.fetchval(_DELIVERED, ids, tokens, codes) or 0)


async def mark_delivered(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, token: uuid.UUID, status_code: int
) -> None:
    """Delivered: record it and count it on the message (a batch of one)."""
    await mark_delivered_many(pool, [(delivery_id, token, status_code)])


async def schedule_retry(
    pool: asyncpg.Pool,
    delivery_id: uuid.UUID,
    token: uuid.UUID,
    *,
    delay: float,
    strict: bool,
    retry_seconds: float,
    error: str | None,
    status_code: int | None,
) -> str | None:
    """Pending again after `delay`, or dead when the retry period is over; returns the
    new status (None when the claim was lost)."""
    return await pool.fetchval(
        _RETRY,
        delivery_id,
        token,
        error,
        status_code,
        float(delay),
        float(retry_seconds),
        strict,
    )


async def mark_final(
    pool: asyncpg.Pool,
    delivery_id: uuid.UUID,
    token: uuid.UUID,
    *,
    status: str,
    error: str | None,
    status_code: int | None,
) -> None:
    """A final failure ('failed'): never tried again unless requeued."""
    await pool.execute(_FINAL, delivery_id, token, status, error, status_code)


async def release(
    pool: asyncpg.Pool | asyncpg.Connection,
    claims: Sequence[tuple[uuid.UUID, uuid.UUID]],
    *,
    unsent: bool = False,
) -> None:
    """Give back claimed deliveries (id, token) that were not finished: due now.
    `unsent`: no request was made, so the attempt counted by the claim is taken back."""
    if claims:
        ids = [delivery_id for delivery_id, _ in claims]
        tokens = [token for _, token in claims]
        await pool.execute(_RELEASE_UNSENT if unsent else _RELEASE, ids, tokens)


async def pull_forward(
    pool: asyncpg.Pool | asyncpg.Connection, host: str, *, batch: int = PULL_BATCH
) -> int:
    """Make `host`'s deliveries in backoff due now, because it answers again; returns
    how many. `batch` rows per statement, each its own transaction, so row locks are
    held briefly whatever the backlog. Workers are woken with a NOTIFY."""
    total = 0
    while True:
        n = int(await pool.fetchval(_PULL_HOST, host, batch) or 0)
        total += n
        if n < batch:
            break
    if total:
        await pool.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return total


async def pull_forward_one(pool: asyncpg.Pool | asyncpg.Connection, delivery_id: uuid.UUID) -> bool:
    """The same for one delivery (its attempt was under way when its host recovered);
    whether it was moved."""
    return bool(await pool.fetchval(_PULL_ONE, delivery_id))


async def message_exists(conn: asyncpg.Connection | asyncpg.Pool, message_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM realtime.messages WHERE id = $1)", message_id
        )
    )


async def list_deliveries(
    conn: asyncpg.Connection | asyncpg.Pool, message_id: uuid.UUID
) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST, message_id)


async def recent_deliveries(
    conn: asyncpg.Connection | asyncpg.Pool, statuses: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    """The `limit` most recently changed deliveries whose status is one of `statuses`."""
    return await conn.fetch(_RECENT, list(statuses), limit)


async def requeue(conn: asyncpg.Connection | asyncpg.Pool, message_id: uuid.UUID) -> int:
    """Make a message's failed and dead deliveries pending again; returns how many."""
    status = await conn.execute(_REQUEUE, message_id)
    count = int(status.split()[-1])
    if count:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return count
