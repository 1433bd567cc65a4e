"""Finding 23: the reader must confirm the latest acknowledged position, even when it
was acknowledged right after the previous confirmation.

Before the fix, a batch acknowledged within 0.1 s of the last confirmation was popped
and forgotten: after two inserts back to back, the slot's confirmed_flush_lsn stayed
at the first one until some later row came (an idle database kept that WAL, and a
restart in between delivered the second insert again).
"""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Server, make_settings

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def _confirmed_flush_lsn(server: Server) -> str:
    slot = server.app[keys.CHANGES].config.slot
    return await server.db.fetchval(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot
    )


async def test_a_quiet_pair_of_inserts_is_confirmed_up_to_the_second(server: Server) -> None:
    await server.db.execute(
        "CREATE TABLE public.ticks (id int PRIMARY KEY); "
        "GRANT SELECT ON public.ticks TO authenticated"
    )
    await server.wait_streaming()
    client = await server.connect(server.token())
    assert (await client.subscribe("db:ticks"))["type"] == "subscribed"
    for trial in range(3):
        # two transactions back to back: two batches, acknowledged within 0.1 s
        first, second = 2 * trial, 2 * trial + 1
        await server.db.execute("INSERT INTO ticks VALUES ($1)", first)
        after_first = await server.db.fetchval("SELECT pg_current_wal_lsn()::text")
        await server.db.execute("INSERT INTO ticks VALUES ($1)", second)
        for expected in (first, second):
            frame = await asyncio.wait_for(client.expect("message", timeout=20), 20)
            assert frame["payload"]["new"] == {"id": expected}, frame
        # no further writes: the second insert's position must still get confirmed
        for _ in range(100):
            beyond = await server.db.fetchval(
                "SELECT confirmed_flush_lsn > $2::text::pg_lsn FROM pg_replication_slots "
                "WHERE slot_name = $1",
                server.app[keys.CHANGES].config.slot,
                after_first,
            )
            if beyond:
                break
            await asyncio.sleep(0.05)
        assert beyond, (
            f"trial {trial}: confirmed_flush_lsn {await _confirmed_flush_lsn(server)} "
            f"stayed at the first insert (ended before {after_first})"
        )
