"""Audience counts (wsAudienceCount) are written once, even when the server stops
while a write of them is in flight: that write is let finish, never cancelled (a
cancelled UPDATE whose commit had already happened had its counts put back and
written a second time by the final flush)."""

from __future__ import annotations

import asyncio

import asyncpg

from pgrealtime.engine.hub import Hub
from pgrealtime.engine.ordering import Ordering


async def test_stopping_mid_write_counts_each_delivery_once(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=3)
    locker = await asyncpg.connect(db_url)
    try:
        await pool.execute("INSERT INTO realtime.channels (pattern) VALUES ('room')")
        message_id = await pool.fetchval("SELECT realtime.publish('room', 'e', '{}')")
        delivery = Ordering(Hub(send_buffer_limit=1 << 20), pool, flush_interval=0.05)
        delivery._counts[message_id] = 3  # three sockets got it
        # hold the row, so the periodic write blocks in PostgreSQL
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT 1 FROM realtime.messages WHERE id = $1 FOR UPDATE",
                             message_id)  # fmt: skip
        delivery.start()
        await asyncio.sleep(0.3)  # the loop's UPDATE is now waiting for the lock
        assert not delivery._counts  # taken by that write
        stopping = asyncio.create_task(delivery.stop())
        await asyncio.sleep(0.2)
        await tx.rollback()  # the waiting UPDATE commits now
        await asyncio.wait_for(stopping, 10)
        assert delivery._task is not None and not delivery._task.cancelled()
        count = await pool.fetchval(
            "SELECT ws_audience_count FROM realtime.messages WHERE id = $1", message_id
        )
        assert count == 3
    finally:
        await locker.close()
        await pool.close()
