"""Delete messages older than the configured retention, in batches, on a timer."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from pgrealtime.db import errors as db_errors

log = logging.getLogger(__name__)

BATCH = 10_000

DELETE_BATCH_SQL = """
WITH doomed AS (
  SELECT id FROM realtime.messages
  WHERE created_at < now() - make_interval(days => $1)
  LIMIT $2
)
DELETE FROM realtime.messages m USING doomed WHERE m.id = doomed.id
"""


async def enforce_retention(pool: asyncpg.Pool) -> int:
    """Apply realtime.config.retention_days now; returns how many messages went."""
    days = await pool.fetchval("SELECT retention_days FROM realtime.config")
    if days is None:
        return 0
    total = 0
    while True:
        status = await pool.execute(DELETE_BATCH_SQL, days, BATCH)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < BATCH:
            break
    if total:
        log.info("retention deleted %d messages older than %d days", total, days)
    return total


async def retention_loop(pool: asyncpg.Pool, interval: float) -> None:
    while True:
        try:
            await enforce_retention(pool)
        except db_errors.FAILED as exc:
            log.warning("retention run failed, will retry: %s", exc)
        await asyncio.sleep(interval)
