"""Claiming: candidates are read without locks and only the chosen rows are locked and
leased, so concurrent claims still never take the same delivery."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from pgrealtime.webhooks import store

from .helpers import add_channel, deliveries, publish

URL = "http://127.0.0.1:9/hook"  # never contacted: these tests only claim


async def pending_ids(pool: asyncpg.Pool, n: int) -> list[uuid.UUID]:
    await add_channel(pool, [URL])
    for _ in range(n):
        await publish(pool)
    rows = await deliveries(pool)
    assert len(rows) == n
    return [r["id"] for r in rows]


async def claim(pool: asyncpg.Pool, limit: int) -> store.Claim:
    return await store.claim(pool, limit=limit, per_host=limit, busy={}, lease_seconds=30)


async def test_concurrent_claims_never_overlap(pool) -> None:
    ids = await pending_ids(pool, 24)
    claims = await asyncio.gather(*(claim(pool, 6) for _ in range(6)))
    taken = [d.id for c in claims for d in c.deliveries]
    assert len(taken) == len(set(taken))
    while len(taken) < len(ids):  # a claim that lost a race comes back short, not wrong
        more = [d.id for d in (await claim(pool, 6)).deliveries]
        assert more
        taken += more
    assert sorted(taken) == sorted(ids)
    assert len(set(taken)) == len(ids)


async def test_row_locked_elsewhere_is_skipped(pool, db_url) -> None:
    ids = await pending_ids(pool, 3)
    oldest = (await deliveries(pool))[0]["id"]
    other = await asyncpg.connect(db_url)
    try:
        async with other.transaction():
            await other.execute(
                "SELECT 1 FROM realtime.webhook_deliveries WHERE id = $1 FOR UPDATE", oldest
            )
            got = [d.id for d in (await claim(pool, 3)).deliveries]
            assert oldest not in got
            assert set(got) <= set(ids)
    finally:
        await other.close()
    row = await pool.fetchrow(
        "SELECT attempts, lease_token FROM realtime.webhook_deliveries WHERE id = $1", oldest
    )
    assert (row["attempts"], row["lease_token"]) == (0, None)
    assert [d.id for d in (await claim(pool, 3)).deliveries] == [oldest]


async def test_stale_candidates_are_not_leased_twice(pool) -> None:
    """A claim that read its candidates before another claim leased them leases none:
    the re-check finds them no longer due."""
    ids = await pending_ids(pool, 2)
    first = await claim(pool, 2)
    assert sorted(d.id for d in first.deliveries) == sorted(ids)
    rows = await pool.fetch(store._LEASE, ids, 30.0, uuid.uuid4())
    assert rows == []
    tokens = {r["lease_token"] for r in await deliveries(pool)}
    assert tokens == {first.token}
