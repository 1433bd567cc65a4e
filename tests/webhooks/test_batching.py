"""Fewer round trips per delivery: outcomes written in batches, claims ahead of the
free slots, per-host rooms in one claim statement, and the guarantees kept."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from pgrealtime.webhooks import store
from pgrealtime.webhooks.recorder import DeliveredRecorder

from .helpers import add_channel, all_final, deliveries, publish, wait_until

URL_A = "http://127.0.0.1:9/a"  # never contacted: these tests only claim and record
URL_B = "http://localhost:9/b"


async def claim_all(pool, limit: int = 50) -> store.Claim:
    return await store.claim(pool, limit=limit, per_host=limit, busy={}, lease_seconds=30)


async def delivered_counts(pool) -> dict[uuid.UUID, int]:
    rows = await pool.fetch("SELECT id, wh_delivered_count FROM realtime.messages")
    return {r["id"]: r["wh_delivered_count"] for r in rows}


async def test_batch_records_only_rows_still_claimed_and_counts_each(pool) -> None:
    await add_channel(pool, [URL_A, URL_B])
    messages = [await publish(pool, f"order:{i}") for i in range(3)]
    claim = await claim_all(pool)
    assert len(claim.deliveries) == 6
    stale, *rest = claim.deliveries
    outcomes = [(d.id, claim.token, 200) for d in rest]
    outcomes.append((stale.id, uuid.uuid4(), 200))  # a claim that is no longer held
    assert await store.mark_delivered_many(pool, outcomes) == 5
    rows = {r["id"]: r for r in await deliveries(pool)}
    assert rows[stale.id]["status"] == "pending"
    assert rows[stale.id]["lease_token"] == claim.token
    for d in rest:
        assert rows[d.id]["status"] == "delivered"
        assert rows[d.id]["lease_token"] is None
        assert rows[d.id]["last_status_code"] == 200
    counts = await delivered_counts(pool)
    assert sorted(counts[m] for m in messages) == [1, 2, 2]
    # recording the same batch again changes nothing (at most one count per delivery)
    assert await store.mark_delivered_many(pool, outcomes) == 0
    assert await delivered_counts(pool) == counts


async def test_concurrent_batches_sharing_messages_do_not_deadlock(pool) -> None:
    """Two writers whose batches hit the same messages in opposite orders."""
    await add_channel(pool, [URL_A, URL_B])
    for i in range(20):
        await publish(pool, f"order:{i}")
    claim = await claim_all(pool)
    by_url: dict[str, list] = {}
    for d in claim.deliveries:
        by_url.setdefault(d.url, []).append((d.id, claim.token, 200))
    first, second = by_url[URL_A], by_url[URL_B][::-1]
    done = await asyncio.wait_for(
        asyncio.gather(
            store.mark_delivered_many(pool, first), store.mark_delivered_many(pool, second)
        ),
        timeout=10,
    )
    assert done == [20, 20]
    assert set((await delivered_counts(pool)).values()) == {2}


async def test_recorder_writes_outcomes_that_finish_together_at_once(pool) -> None:
    await add_channel(pool, [URL_A])
    for i in range(10):
        await publish(pool, f"order:{i}")
    claim = await claim_all(pool)
    recorder = DeliveredRecorder(pool, delay=0.05)
    await asyncio.gather(*(recorder.delivered(d.id, claim.token, 204) for d in claim.deliveries))
    await recorder.close()
    assert (recorder.batches, recorder.recorded) == (1, 10)
    assert {(r["status"], r["last_status_code"]) for r in await deliveries(pool)} == {
        ("delivered", 204)
    }


async def test_claim_gives_each_host_its_room(pool) -> None:
    await add_channel(pool, [URL_A, URL_B])
    for i in range(10):
        await publish(pool, f"order:{i}")
    claim = await store.claim(pool, limit=50, per_host=4, busy={"127.0.0.1": 3}, lease_seconds=30)
    assert Counter(d.host for d in claim.deliveries) == {"127.0.0.1": 1, "localhost": 4}
    claim = await store.claim(pool, limit=50, per_host=4, busy={"127.0.0.1": 4}, lease_seconds=30)
    assert Counter(d.host for d in claim.deliveries) == {"localhost": 4}


async def test_unsent_release_takes_the_attempt_back(pool) -> None:
    await add_channel(pool, [URL_A])
    await publish(pool)
    claim = await claim_all(pool)
    [d] = claim.deliveries
    assert d.attempts == 1
    await store.release(pool, [(d.id, claim.token)], unsent=True)
    [row] = await deliveries(pool)
    assert (row["attempts"], row["lease_token"], row["status"]) == (0, None, "pending")


async def test_crash_between_send_and_record_sends_again(
    pool, receivers, workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome write fails after the receiver answered 2xx: the delivery is not
    lost, it comes due again when the lease ends and is sent again, same id."""
    receiver = await receivers()
    await add_channel(pool, [receiver.url])
    real = store.mark_delivered_many
    failures = []

    async def failing_once(conn, outcomes):
        if not failures:
            failures.append(len(outcomes))
            raise OSError("connection lost")
        return await real(conn, outcomes)

    monkeypatch.setattr(store, "mark_delivered_many", failing_once)
    message_id = await publish(pool)
    await workers(options={"lease_seconds": 1.0})
    await wait_until(lambda: all_final(pool), timeout=15)
    assert failures == [1]
    answered = receiver.answered()
    assert list(answered.values()) == [2]  # at least once: the same delivery id twice
    [row] = await deliveries(pool, message_id)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    count = await pool.fetchval(
        "SELECT wh_delivered_count FROM realtime.messages WHERE id = $1", message_id
    )
    assert count == 1


async def test_queued_past_its_lease_budget_is_given_back_not_sent_late(
    pool, receivers, workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one request at a time and a short lease, deliveries queued behind a slow
    request run out of lease budget: they are given back and claimed again, never
    sent under a lease that may end mid-request. Each still arrives exactly once."""
    receiver = await receivers(delay=0.6)
    await add_channel(pool, [receiver.url])
    for i in range(4):
        await publish(pool, f"order:{i}")
    real = store.release
    given_back: list[int] = []

    async def spy(pool_, claims, *, unsent: bool = False):
        if unsent and claims:
            given_back.append(len(claims))
        await real(pool_, claims, unsent=unsent)

    monkeypatch.setattr(store, "release", spy)
    # lease 2 s: a queued delivery may wait 0.5 s (a quarter) before it must be given back
    await workers(options={"per_host_concurrency": 1, "prefetch_per_host": 3, "lease_seconds": 2})
    await wait_until(lambda: all_final(pool), timeout=20)
    assert set(receiver.answered().values()) == {1}
    assert len(receiver.requests) == 4
    assert receiver.max_active == 1
    assert given_back  # the path under test was taken
    rows = await deliveries(pool)
    assert {r["status"] for r in rows} == {"delivered"}
    # attempts count requests made, not claims given back unsent
    assert sorted(r["attempts"] for r in rows) == [1, 1, 1, 1]


async def test_per_host_limit_from_settings(pool, receivers, workers) -> None:
    receiver = await receivers(delay=0.2)
    await add_channel(pool, [receiver.url])
    for i in range(12):
        await publish(pool, f"order:{i}")
    await workers(webhook_per_host_concurrency=3)
    await wait_until(lambda: all_final(pool), timeout=15)
    assert receiver.max_active == 3
    assert len(receiver.requests) == 12
