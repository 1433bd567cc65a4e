"""Wait until the transactions of a batch are visible to new snapshots.

PostgreSQL flushes a commit record to the WAL before it takes the transaction out of
the list of running ones, and the replication stream may hand us the commit in
between. A row level security check run in that instant sees the rows as not yet
committed, finds none, and the change would reach no subscriber: a whole transaction
lost for everyone on that table. So before checking rows, ask the database once per
batch whether a fresh snapshot still counts any of the batch's transactions as
running, and wait briefly while it does (usually it does not: one round trip).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from pgrealtime.changes.visibility import Database

log = logging.getLogger(__name__)

# The WAL carries 32-bit transaction ids; pg_visible_in_snapshot wants the 64-bit
# form, so the epoch is taken from the snapshot's xmax (an id above xmax belongs to
# the previous epoch).
_STILL_RUNNING = """
WITH snap AS (
    SELECT s, pg_snapshot_xmax(s)::text::bigint AS xmax
    FROM (SELECT pg_current_snapshot() AS s) AS cur
), ids AS (
    SELECT snap.s, snap.xmax, ((snap.xmax >> 32) << 32) | x AS full_id
    FROM snap, unnest($1::bigint[]) AS x
)
SELECT count(*)::int FROM ids
WHERE NOT pg_visible_in_snapshot(
    (CASE WHEN full_id > xmax THEN full_id - 4294967296 ELSE full_id END)::text::xid8, s)
"""


async def wait_committed(
    db: Database, xids: Iterable[int], *, pause: float = 0.002, limit: float = 2.0
) -> bool:
    """True once no transaction of `xids` is running for a new snapshot; False if some
    still were after `limit` seconds (the caller goes on; logged)."""
    ids = sorted(set(xids))
    if not ids:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while await db.fetchval(_STILL_RUNNING, ids):
        if loop.time() >= deadline:
            log.warning("change feed: transactions %s still not visible after %ss", ids, limit)
            return False
        await asyncio.sleep(pause)
    return True
