"""Finding 20: KeptConnection.drop() ran teardown and release under one `suppress`, so
a teardown that failed skipped the release and the pool lost the connection for good
(a pool of one then hangs every later acquire). Now the release always happens, and a
connection whose teardown failed is closed rather than handed on with its state."""

from __future__ import annotations

import asyncio

import asyncpg

from pgrealtime.webhooks.recorder import KeptConnection


async def _unlisten(conn: asyncpg.Connection) -> None:
    """A teardown that needs the server, like the worker's (it removes a LISTEN)."""
    await conn.execute("UNLISTEN realtime_webhook")


async def _can_acquire(pool: asyncpg.Pool) -> bool:
    try:
        conn = await asyncio.wait_for(pool.acquire(), timeout=2)
    except TimeoutError:
        return False
    await pool.release(conn)
    return True


async def test_released_when_the_backend_was_terminated(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    admin = await asyncpg.connect(db_url)
    try:
        kept = KeptConnection(pool, teardown=_unlisten)
        conn = await kept.get()
        await conn.execute("LISTEN realtime_webhook")
        pid = conn.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await kept.drop()  # the teardown fails: the server side is gone
        assert await _can_acquire(pool)
        assert pool.get_idle_size() == pool.get_size() or pool.get_size() == 0
    finally:
        await admin.close()
        await asyncio.wait_for(pool.close(), 5)


async def test_a_failed_teardown_does_not_pass_its_state_on(db_url: str) -> None:
    async def failing(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT 1/0")  # a real error from the server

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    try:
        kept = KeptConnection(pool, teardown=failing)
        conn = await kept.get()
        await conn.execute("LISTEN realtime_webhook")
        pid = conn.get_server_pid()
        await kept.drop()
        assert await _can_acquire(pool)
        async with pool.acquire() as fresh:
            # not the connection that still listened: that one was closed
            assert fresh.get_server_pid() != pid
            listening = await fresh.fetchval("SELECT count(*) FROM pg_listening_channels()")
            assert listening == 0
    finally:
        await asyncio.wait_for(pool.close(), 5)
