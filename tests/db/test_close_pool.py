"""Shutdown closes the pool gracefully but not for ever: a query the database does not
finish (a hung database looks the same from here) is cut after the grace period."""

from __future__ import annotations

import asyncio
import contextlib

from pgrealtime.app import close_pool, open_pool


async def test_a_query_in_flight_does_not_hold_the_shutdown(db_url: str) -> None:
    pool = await open_pool(db_url, 2)
    stuck = asyncio.create_task(pool.fetchval("SELECT pg_sleep(25)"))
    await asyncio.sleep(0.3)  # the query is running
    closing = asyncio.create_task(close_pool(pool, grace=0.5))
    done, _ = await asyncio.wait({closing}, timeout=15)  # pg_sleep would take 25 s
    assert closing in done and closing.exception() is None
    assert pool.is_closing()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait({stuck}, timeout=5)
    assert stuck.done() and stuck.exception() is not None  # cut, not finished


async def test_an_idle_pool_closes_gracefully(db_url: str) -> None:
    pool = await open_pool(db_url, 2)
    assert await pool.fetchval("SELECT 1") == 1
    await close_pool(pool, grace=5)
    assert pool.is_closing()
