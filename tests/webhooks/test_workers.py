"""Several workers, restarts, and concurrency limits: each delivery sent once."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from pgrealtime.webhooks import store

from .helpers import add_channel, all_final, deliveries, publish, wait_until


async def test_new_worker_delivers_after_stop_mid_retry(pool, receivers, workers) -> None:
    receiver = await receivers(default=500)
    await add_channel(pool, [receiver.url])
    first = await workers(options={"base_delay": 1.0, "max_delay": 1.0})
    message_id = await publish(pool)
    await wait_until(lambda: len(receiver.requests) == 1)
    await first.stop()
    [delivery] = await deliveries(pool, message_id)
    assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
    assert delivery["lease_token"] is None

    receiver.default = 200
    await workers()
    await wait_until(lambda: all_final(pool), timeout=15)
    assert receiver.answered(200) == {str(delivery["id"]): 1}
    assert receiver.answered(500) == {str(delivery["id"]): 1}
    assert len(receiver.requests) == 2
    assert (
        await pool.fetchval(
            "SELECT wh_delivered_count FROM realtime.messages WHERE id = $1", message_id
        )
        == 1
    )


async def test_stop_releases_claims_in_flight(pool, receivers, workers) -> None:
    """A stopped worker gives back an unfinished claim: the next worker sends it now,
    not when the lease (timeout + 30 s) would have run out."""
    receiver = await receivers(delay=2.0)
    await add_channel(pool, [receiver.url])
    first = await workers()
    message_id = await publish(pool)
    await wait_until(lambda: receiver.active == 1)
    await first.stop(grace=0)
    [delivery] = await deliveries(pool, message_id)
    assert delivery["status"] == "pending"
    assert delivery["lease_token"] is None
    receiver.delay = 0
    started = time.monotonic()
    await workers()
    await wait_until(lambda: all_final(pool))
    assert time.monotonic() - started < 5
    [delivery] = await deliveries(pool, message_id)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)


async def test_two_workers_deliver_each_message_once(db_url, pool, receivers, workers) -> None:
    first, second = await receivers(), await receivers(script=[500, 500, 429, 503])
    await add_channel(pool, [first.url, second.url])
    # small concurrency so both workers get a share; separate pools like processes
    other_pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    await workers(options={"max_concurrency": 3})
    other = await workers(other_pool, options={"max_concurrency": 3})
    try:
        ids = [await publish(pool, f"order:{i}", "e", {"i": i}) for i in range(40)]
        await wait_until(lambda: all_final(pool), timeout=20)
    finally:
        await other.stop(grace=0)  # it holds a connection of the pool until then
        await other_pool.close()
    rows = await deliveries(pool)
    assert len(rows) == 80
    assert {r["status"] for r in rows} == {"delivered"}
    answered = first.answered() + second.answered()
    assert set(answered) == {str(r["id"]) for r in rows}
    assert set(answered.values()) == {1}
    counts = await pool.fetch(
        "SELECT wh_audience_count, wh_delivered_count FROM realtime.messages WHERE id = ANY($1)",
        ids,
    )
    assert {(r[0], r[1]) for r in counts} == {(2, 2)}


async def test_slow_host_limited_and_does_not_starve_others(pool, receivers, workers) -> None:
    slow = await receivers(delay=0.4)
    fast = await receivers()
    # 'localhost' and '127.0.0.1' are different hosts to the limiter
    fast_url = fast.url.replace("127.0.0.1", "localhost")
    await add_channel(pool, [slow.url], pattern="slow:%")
    await add_channel(pool, [fast_url], pattern="fast:%")
    for i in range(10):
        await publish(pool, f"slow:{i}")
    for i in range(5):
        await publish(pool, f"fast:{i}")
    await workers(options={"per_host_concurrency": 2, "max_concurrency": 4})
    await wait_until(lambda: len(fast.requests) == 5, timeout=10)
    assert len(slow.requests) < 10  # the fast host did not wait for the slow backlog
    await wait_until(lambda: all_final(pool), timeout=15)
    assert slow.max_active == 2
    assert len(slow.requests) == 10


async def test_wakes_promptly_on_notify(pool, receivers, workers) -> None:
    """NOTIFY from the enqueue trigger wakes the worker well before its next poll."""
    receiver = await receivers()
    await add_channel(pool, [receiver.url])
    await workers(options={"poll_interval": 5.0})
    await asyncio.sleep(0.3)  # the worker is now asleep until its next poll
    started = time.monotonic()
    await publish(pool)
    await wait_until(lambda: len(receiver.requests) == 1, timeout=4)
    assert time.monotonic() - started < 2


async def test_claim_of_a_dead_process_expires_and_its_late_result_is_ignored(
    pool, receivers, workers
) -> None:
    receiver = await receivers()
    await add_channel(pool, [receiver.url])
    message_id = await publish(pool)
    # a process claims the delivery, then dies without recording anything
    lost = await store.claim(pool, limit=10, per_host=8, busy={}, lease_seconds=0.5)
    assert len(lost.deliveries) == 1
    again = await store.claim(pool, limit=10, per_host=8, busy={}, lease_seconds=0.5)
    assert again.deliveries == []  # leased: nobody else may take it meanwhile
    await workers()
    await wait_until(lambda: all_final(pool))
    assert len(receiver.requests) == 1
    # the dead process's result arriving late changes nothing
    await store.mark_delivered(pool, lost.deliveries[0].id, lost.token, 200)
    [delivery] = await deliveries(pool, message_id)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)
    assert (
        await pool.fetchval(
            "SELECT wh_delivered_count FROM realtime.messages WHERE id = $1", message_id
        )
        == 1
    )


async def test_stop_lets_attempts_in_flight_finish(pool, receivers, workers) -> None:
    receiver = await receivers(delay=0.5)
    await add_channel(pool, [receiver.url])
    worker = await workers()
    await publish(pool)
    await wait_until(lambda: receiver.active == 1)
    await worker.stop()
    [delivery] = await deliveries(pool)
    assert delivery["status"] == "delivered"
