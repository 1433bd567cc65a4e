"""A connection of its own, outside the pool (LISTEN, an advisory lock, NOTIFY sends):
the two things every loop that keeps one does, written once.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

CLOSE_SECONDS = 2.0  # a database that stopped answering must not hold a loop's retry


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close a connection that may already be broken: never raise, never hang."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), CLOSE_SECONDS)


async def wake_or_lost(wake: asyncio.Event, lost: asyncio.Event, poll: float | None = None) -> bool:
    """Wait until there is work (`wake`, then cleared) or the connection is gone
    (`lost`, left set for the caller's loop to see); False when `poll` seconds passed
    first."""
    waiters = {asyncio.create_task(wake.wait()), asyncio.create_task(lost.wait())}
    done, _ = await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    wake.clear()
    return bool(done)
