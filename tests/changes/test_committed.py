"""`wait_committed`: a row level security check waits until the batch's transactions
are visible to new snapshots (the replication stream can hand over a commit before
PostgreSQL takes the transaction out of its running list; checked then, the rows are
invisible and the change would reach nobody)."""

from __future__ import annotations

import asyncpg

from pgrealtime.changes.committed import wait_committed


async def test_waits_for_a_running_transaction_and_not_for_a_finished_one(db_url: str) -> None:
    running = await asyncpg.connect(db_url)
    checker = await asyncpg.connect(db_url)
    try:
        await running.execute("BEGIN")
        xid8 = await running.fetchval("SELECT pg_current_xact_id()::text::bigint")
        xid32 = xid8 & 0xFFFFFFFF  # what the WAL carries
        assert not await wait_committed(checker, [xid32], limit=0.2)
        await running.execute("COMMIT")
        assert await wait_committed(checker, [xid32], limit=5)
        # an aborted transaction is not running either
        await running.execute("BEGIN")
        aborted = await running.fetchval("SELECT pg_current_xact_id()::text::bigint")
        await running.execute("ROLLBACK")
        assert await wait_committed(checker, [aborted & 0xFFFFFFFF, xid32], limit=5)
        assert await wait_committed(checker, [], limit=0)
    finally:
        await running.close()
        await checker.close()
