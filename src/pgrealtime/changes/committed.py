"""Wait until the transactions of a batch are visible to new snapshots.

PostgreSQL flushes a commit record to the WAL before it takes the transaction out of
the list of running ones, and the replication stream may hand us the commit in
between. A row level security check run in that instant sees the rows as not yet
committed, finds none, and the change would reach no subscriber: a whole transaction
lost for everyone on that table. So before checking rows, ask the database once per
batch whether a fresh snapshot still counts any of the batch's transactions as
running, and wait briefly while it does (usually it does not). The first ask rides
on the batch's privilege check (`visibility.batch_readers`, one round trip for both);
`wait_committed` asks again only while some still run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgrealtime.changes.visibility import Database

log = logging.getLogger(__name__)

# A fresh snapshot and its xmax, as a CTE named `snap` (for `still_running`).
SNAPSHOT = """snap AS (
    SELECT s, pg_snapshot_xmax(s)::text::bigint AS xmax
    FROM (SELECT pg_current_snapshot() AS s) AS cur
)"""


def still_running(xid: str) -> str:
    """SQL condition: the 32-bit transaction id `xid` (an SQL expression, as the WAL
    carries it) still runs for `snap`'s snapshot. pg_visible_in_snapshot wants the
    64-bit form, so the epoch is taken from the snapshot's xmax (an id above xmax
    belongs to the previous epoch)."""
    full = f"(((snap.xmax >> 32) << 32) | {xid})"
    return (
        f"NOT pg_visible_in_snapshot((CASE WHEN {full} > snap.xmax THEN {full} - 4294967296 "
        f"ELSE {full} END)::text::xid8, snap.s)"
    )


_STILL_RUNNING = (
    f"WITH {SNAPSHOT} SELECT count(*)::int FROM snap, unnest($1::bigint[]) AS x "
    f"WHERE {still_running('x')}"
)


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
