"""The webhook_deliveries table: claiming due deliveries and recording outcomes (SQL).

Rows are the queue. A claim locks due rows with FOR UPDATE SKIP LOCKED, so concurrent
claims (other tasks, other server processes) never take the same row, and pushes the
row's next_attempt_at forward by a lease: if the claiming process dies, the row simply
becomes due again when the lease runs out. Each claim has a token; an outcome is
written only while the row still carries that token, so a process whose lease ran
out cannot overwrite the newer claim's result.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgrealtime.webhooks.payload import Delivery

# Candidates: due and pending, hosts at their concurrency limit left out so their
# backlog cannot hide other hosts' deliveries. More than needed are scanned so a
# burst for one host still leaves room for others in the same claim.
_CANDIDATES = """
SELECT id, host FROM realtime.webhook_deliveries
WHERE status = 'pending' AND next_attempt_at <= now() AND host <> ALL($1::text[])
ORDER BY next_attempt_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

_LEASE = """
UPDATE realtime.webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), lease_token = $3,
    attempts = d.attempts + 1, updated_at = now()
FROM realtime.messages m
WHERE d.id = ANY($1::uuid[]) AND m.id = d.message_id
RETURNING d.id, d.url, d.host, d.attempts, m.id AS message_id, m.channel_id, m.channel_name,
          m.event_name, m.payload::text AS payload, m.sender_id, m.sender_type, m.created_at
"""

# Seconds until the next pending delivery (of a host with room) is due.
_NEXT_DUE = """
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM realtime.webhook_deliveries
WHERE status = 'pending' AND host <> ALL($1::text[])
"""

_DELIVERED = """
WITH d AS (
  UPDATE realtime.webhook_deliveries
  SET status = 'delivered', delivered_at = now(), updated_at = now(), lease_token = NULL,
      last_status_code = $3, last_error = NULL
  WHERE id = $1 AND lease_token = $2 AND status = 'pending'
  RETURNING message_id
)
UPDATE realtime.messages m SET wh_delivered_count = m.wh_delivered_count + 1
FROM d WHERE m.id = d.message_id
"""

# Retry after `delay` seconds, but never past the end of the retry period: the last
# try happens at its end. After that, or when the receiver itself asked to wait
# (Retry-After, `strict`) beyond it, the delivery is dead.
_RETRY = """
UPDATE realtime.webhook_deliveries
SET updated_at = now(), lease_token = NULL, last_error = $3, last_status_code = $4,
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

_LIST = """
SELECT id, message_id, url, status, attempts, last_error, last_status_code, next_attempt_at,
       delivered_at, created_at, updated_at
FROM realtime.webhook_deliveries WHERE message_id = $1
ORDER BY created_at, url
"""

# Requeue gives a fresh retry period and attempt count: an operator who asks again
# has usually fixed the receiver.
_REQUEUE = """
UPDATE realtime.webhook_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), retry_from = now(),
    lease_token = NULL, updated_at = now()
WHERE message_id = $1 AND status IN ('failed', 'dead')
"""

NOTIFY_CHANNEL = "realtime_webhook"


@dataclass(frozen=True)
class Claim:
    """Deliveries leased under one token; `next_due` is seconds until the next pending
    delivery is due (None when there is none), to know how long to sleep."""

    token: uuid.UUID
    deliveries: list[Delivery]
    next_due: float | None


def pick(
    candidates: Sequence[Mapping[str, Any]], limit: int, per_host: int, busy: Mapping[str, int]
) -> list[uuid.UUID]:
    """Candidates, in order, that fit the free slots and each host's free slots."""
    taken: dict[str, int] = {}
    chosen: list[uuid.UUID] = []
    for row in candidates:
        if len(chosen) >= limit:
            break
        host = row["host"]
        if busy.get(host, 0) + taken.get(host, 0) >= per_host:
            continue
        taken[host] = taken.get(host, 0) + 1
        chosen.append(row["id"])
    return chosen


def _delivery(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
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
    )


async def claim(
    pool: asyncpg.Pool,
    *,
    limit: int,
    per_host: int,
    busy: Mapping[str, int],
    lease_seconds: float,
    scan_factor: int = 4,
) -> Claim:
    """Lease up to `limit` due deliveries, at most `per_host` in flight per host
    counting the `busy` ones this process already has."""
    token = uuid.uuid4()
    saturated = [host for host, n in busy.items() if n >= per_host]
    async with pool.acquire() as conn, conn.transaction():
        candidates = await conn.fetch(_CANDIDATES, saturated, limit * scan_factor)
        chosen = pick(candidates, limit, per_host, busy)
        rows = await conn.fetch(_LEASE, chosen, float(lease_seconds), token) if chosen else []
        next_due = None
        if len(rows) < limit:
            next_due = await conn.fetchval(_NEXT_DUE, saturated)
    order = {delivery_id: i for i, delivery_id in enumerate(chosen)}
    deliveries = sorted((_delivery(r) for r in rows), key=lambda d: order[d.id])
    return Claim(token=token, deliveries=deliveries, next_due=next_due)


async def mark_delivered(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, token: uuid.UUID, status_code: int
) -> None:
    """Delivered: record it and count it on the message, in one statement."""
    await pool.execute(_DELIVERED, delivery_id, token, status_code)


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


async def release(pool: asyncpg.Pool, claims: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Give back claimed deliveries (id, token) that were not finished: due now."""
    if claims:
        ids = [delivery_id for delivery_id, _ in claims]
        tokens = [token for _, token in claims]
        await pool.execute(_RELEASE, ids, tokens)


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


async def requeue(conn: asyncpg.Connection | asyncpg.Pool, message_id: uuid.UUID) -> int:
    """Make a message's failed and dead deliveries pending again; returns how many."""
    status = await conn.execute(_REQUEUE, message_id)
    count = int(status.split()[-1])
    if count:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return count
