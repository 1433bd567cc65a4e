"""Webhooks once per cluster: three real server processes on one database (as workers
of machines would be), each with its webhook worker claiming due deliveries with
`FOR UPDATE SKIP LOCKED`. Every delivery reaches the receiver exactly once, whichever
process claimed it, with some failing first (each retry sent once too)."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
from aiohttp import web
from tests.cluster.conftest import ProcFactory
from tests.webhooks.helpers import Receiver, add_channel, publish

MESSAGES = 60


async def test_each_webhook_delivery_is_sent_once_by_one_of_three_processes(
    processes: ProcFactory, db_url: str
) -> None:
    failed: set[str] = set()

    def first_try_of_some_fails(_index: int, request: web.Request) -> int:
        """A sixth of the deliveries fail their first attempt (the retry must be sent
        once as well)."""
        delivery = request.headers["X-InsForge-Delivery-ID"]
        if delivery in failed or int(delivery[-2:], 16) % 6:
            return 200
        failed.add(delivery)
        return 500

    receiver = await Receiver(responder=first_try_of_some_fails).start()
    procs = [processes("--webhook-allow-private-networks") for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    try:
        await add_channel(pool, [receiver.url])
        ids = await asyncio.gather(*(publish(pool, payload={"n": n}) for n in range(MESSAGES)))
        async with asyncio.timeout(60):
            while len(receiver.answered(200)) < MESSAGES:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
        ok = receiver.answered(200)
        assert set(ok.values()) == {1} and len(ok) == MESSAGES
        assert failed  # some were retried
        attempts = Counter((r.delivery_id, r.status) for r in receiver.requests)
        assert max(attempts.values()) == 1  # no attempt sent twice
        delivered = await pool.fetchval(
            "SELECT count(*) FROM realtime.webhook_deliveries"
            " WHERE status = 'delivered' AND message_id = ANY($1::uuid[])",
            ids,
        )
        assert delivered == MESSAGES
    finally:
        await pool.close()
        await receiver.stop()
