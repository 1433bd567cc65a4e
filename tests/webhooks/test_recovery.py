"""A host that answers again after an outage gets its backlog at once, not as each
delivery's backoff runs out: each delivery still exactly once, under a lease, and
waits the receiver asked for (Retry-After) are kept."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import orjson
from aiohttp import web

from pgrealtime.webhooks import store
from pgrealtime.webhooks.recovery import HostRecovery

from .helpers import add_channel, deliveries, free_port, publish, wait_until

# First backoff step 60-120 s: anything delivered within a test's timeout was pulled.
SLOW_BACKOFF = {"base_delay": 120.0, "max_delay": 3600.0, "recovery_min_outage": 0.3}
MIN_BACKOFF = timedelta(seconds=60)


# -- noticing a recovery (pure) -------------------------------------------------------


def test_success_after_an_outage_recovers_once() -> None:
    health = HostRecovery(min_outage=5.0)
    assert not health.failed("a", 0.0)
    assert not health.failed("a", 6.0)
    assert not health.succeeded("b", 7.0)  # another host
    assert health.succeeded("a", 7.0)
    assert not health.succeeded("a", 7.1)  # once per outage


def test_short_runs_do_not_recover() -> None:
    """A delivery failing between successes (a receiver bug on one payload) keeps its
    backoff: it never makes a run as long as an outage."""
    health = HostRecovery(min_outage=5.0)
    for t in range(0, 60, 2):
        assert not health.failed("a", float(t))
        assert not health.succeeded("a", t + 1.0)


def test_attempt_under_way_at_recovery_is_late() -> None:
    health = HostRecovery(min_outage=1.0, straggle=30.0)
    health.failed("a", 0.0)
    health.failed("a", 2.0)
    assert health.succeeded("a", 3.0)
    assert health.failed("a", 2.5)  # began before the recovery, recorded after it
    assert not health.failed("a", 3.5)  # began after: a new run
    assert not health.succeeded("a", 4.0)
    health.failed("b", 0.0)
    health.failed("b", 2.0)
    assert health.succeeded("b", 40.0)  # forgets a's recovery, past the straggle window
    assert not health.failed("a", 2.5)


# -- the statement ------------------------------------------------------------------


async def test_pull_forward_moves_only_unclaimed_backoff_rows(pool) -> None:
    await add_channel(pool, ["http://a.example/hook", "http://b.example/hook"])
    ids = [await publish(pool, "order:1", "e", {"i": i}) for i in range(6)]
    claim = await store.claim(pool, limit=100, per_host=100, busy={}, lease_seconds=300)
    rows = {(d.message_id, d.host): d.id for d in claim.deliveries}
    a = [rows[(m, "a.example")] for m in ids]
    b = [rows[(m, "b.example")] for m in ids]
    for delivery_id in [*a[:4], *b]:  # a[4] stays leased; a[5] is released unsent
        strict = delivery_id == a[3]  # the receiver asked for an hour (Retry-After)
        await store.schedule_retry(
            pool,
            delivery_id,
            claim.token,
            delay=3600,
            strict=strict,
            retry_seconds=86400,
            error="HTTP 503",
            status_code=429 if strict else 503,
        )
    await store.release(pool, [(a[5], claim.token)], unsent=True)
    before = {r["id"]: r for r in await deliveries(pool)}

    async with pool.acquire() as locker, locker.transaction():  # another statement's row
        await locker.execute(
            "SELECT 1 FROM realtime.webhook_deliveries WHERE id = $1 FOR UPDATE", a[2]
        )
        moved = await asyncio.wait_for(store.pull_forward(pool, "a.example", batch=1), 5)
    assert moved == 2  # a[0], a[1]: one per statement; a[2] skipped, not waited for
    after = {r["id"]: r for r in await deliveries(pool)}
    for delivery_id in (a[0], a[1]):
        assert after[delivery_id]["next_attempt_at"] == after[delivery_id]["created_at"]
        assert (after[delivery_id]["attempts"], after[delivery_id]["lease_token"]) == (1, None)
    for delivery_id in (a[2], a[3], a[4], a[5], *b):
        assert after[delivery_id]["next_attempt_at"] == before[delivery_id]["next_attempt_at"]
        assert after[delivery_id]["lease_token"] == before[delivery_id]["lease_token"]
    assert after[a[3]]["retry_not_before"] is not None
    assert after[a[4]]["lease_token"] == claim.token
    assert await store.pull_forward_one(pool, a[2])
    assert not await store.pull_forward_one(pool, a[2])  # already due
    # made due, they are claimed like any due row: once, under a new lease
    again = await store.claim(pool, limit=100, per_host=100, busy={}, lease_seconds=300)
    assert sorted(d.id for d in again.deliveries) == sorted([a[0], a[1], a[2], a[5]])
    assert all(d.attempts == 2 for d in again.deliveries if d.id != a[5])


# -- end to end ----------------------------------------------------------------------


async def backoff_rows(pool: asyncpg.Pool) -> dict[uuid.UUID, asyncpg.Record]:
    """Deliveries that failed once and wait out their backoff step, by id."""
    rows = await deliveries(pool)
    return {
        r["id"]: r
        for r in rows
        if r["status"] == "pending" and r["attempts"] == 1 and r["lease_token"] is None
    }


async def test_recovered_host_gets_its_backlog_before_the_backoff(pool, receivers, workers) -> None:
    """The receiver answers 503 for a while (one delivery gets 429 with Retry-After,
    one is held and answered 503 after the recovery); then 200. A new message's
    success makes the backlog due: delivered while its backoff has a minute to go."""
    down = True
    hold = asyncio.Event()

    async def respond(_index: int, request: web.Request) -> int | tuple[int, dict[str, str]]:
        payload = orjson.loads(await request.read())["payload"]
        if not down:
            return 200
        if payload.get("wait"):
            return 429, {"Retry-After": "3600"}
        if payload.get("slow"):  # under way when the host recovers, fails after
            await hold.wait()
        return 503

    receiver = await receivers(responder=respond)
    await add_channel(pool, [receiver.url])
    await workers(options=SLOW_BACKOFF)
    backlog = [await publish(pool, "order:1", "e", {"i": i}) for i in range(10)]
    await publish(pool, "order:1", "e", {"wait": True})
    await asyncio.sleep(0.4)  # the outage lasts longer than recovery_min_outage
    backlog += [await publish(pool, "order:1", "e", {"i": i}) for i in range(10, 20)]
    await wait_until(lambda: backlog_failed(pool, 21))
    failed = await backoff_rows(pool)
    [waiting] = [r for r in failed.values() if r["last_status_code"] == 429]
    slow = await publish(pool, "order:1", "e", {"slow": True})
    await wait_until(lambda: receiver.active == 1)

    down = False
    probe = await publish(pool, "order:1", "e", {"probe": True})
    await wait_until(lambda: all_delivered(pool, [probe]))
    hold.set()
    await wait_until(lambda: all_delivered(pool, [*backlog, slow]), timeout=20)

    rows = {r["message_id"]: r for r in await deliveries(pool)}
    for message_id in backlog:
        row = rows[message_id]
        original = failed[row["id"]]["next_attempt_at"]
        assert original - failed[row["id"]]["updated_at"] >= MIN_BACKOFF
        assert row["attempts"] == 2
        assert row["delivered_at"] < original  # it did not wait out its backoff
    assert rows[slow]["attempts"] == 2
    assert rows[slow]["delivered_at"] - rows[slow]["created_at"] < MIN_BACKOFF
    # the original times are still ahead: only the pull-forward can explain the above
    originals = [r["next_attempt_at"] for r in failed.values() if r["id"] != waiting["id"]]
    assert await pool.fetchval("SELECT now() < $1", min(originals))
    # the receiver's own wait is kept
    kept = rows[waiting["message_id"]]
    assert (kept["status"], kept["attempts"]) == ("pending", 1)
    assert kept["next_attempt_at"] == waiting["next_attempt_at"]
    assert kept["retry_not_before"] == waiting["next_attempt_at"]
    # every delivery reached the receiver once with a 2xx, the waiting one never did
    answered = receiver.answered(200)
    assert set(answered.values()) == {1}
    assert set(answered) == {str(r["id"]) for m, r in rows.items() if m != kept["message_id"]}


async def test_two_workers_after_an_outage_deliver_each_once(
    db_url, pool, receivers, workers
) -> None:
    """Separate pools, like two server processes; the receiver refuses connections
    (its port is closed) during the outage."""
    port = free_port()
    await add_channel(pool, [f"http://127.0.0.1:{port}/hook"])
    other_pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    await workers(options=SLOW_BACKOFF)
    other = await workers(other_pool, options=SLOW_BACKOFF)
    try:
        backlog = []
        for i in range(40):
            backlog.append(await publish(pool, "order:1", "e", {"i": i}))
            await asyncio.sleep(0.02)  # failures of both workers, spread over the outage
        await wait_until(lambda: backlog_failed(pool, 40))
        failed = await backoff_rows(pool)
        receiver = await receivers(port=port)
        probes = []
        while not await all_delivered(pool, backlog):  # steady traffic, as in production
            probes.append(await publish(pool, "order:2", "e", {"probe": len(probes)}))
            assert len(probes) < 200, "backlog not pulled forward"
            await asyncio.sleep(0.1)
        await wait_until(lambda: all_delivered(pool, probes))
    finally:
        await other.stop(grace=0)
        await other_pool.close()
    rows = await deliveries(pool)
    assert {r["status"] for r in rows} == {"delivered"}
    assert set(receiver.answered(200)) == {str(r["id"]) for r in rows}
    assert set(receiver.answered(200).values()) == {1}
    assert len(receiver.requests) == len(rows)
    for row in rows:
        if row["id"] in failed:
            assert row["delivered_at"] < failed[row["id"]]["next_attempt_at"]
    originals = [r["next_attempt_at"] for r in failed.values()]
    assert await pool.fetchval("SELECT now() < $1", min(originals))


async def backlog_failed(pool: asyncpg.Pool, count: int) -> bool:
    return len(await backoff_rows(pool)) == count


async def all_delivered(pool: asyncpg.Pool, message_ids: list[uuid.UUID]) -> bool:
    return not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM realtime.webhook_deliveries"
        " WHERE message_id = ANY($1) AND status <> 'delivered')",
        message_ids,
    )
