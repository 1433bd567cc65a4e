"""The per-host scheduler of claimed webhook deliveries (pure): slots, turns, refills,
expired leases and when to claim."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from pgrealtime.webhooks.payload import WebhookDelivery
from pgrealtime.webhooks.scheduler import (
    BUSY_NOTIFY_INTERVAL,
    CLAIM_MAX,
    MIN_SLEEP,
    HostScheduler,
    Queued,
)

pytestmark = pytest.mark.pure

TOKEN = uuid.uuid4()


def item(host: str, send_by: float = 100.0) -> Queued:
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        url=f"https://{host}/hook",
        host=host,
        attempts=1,
        message_id=uuid.uuid4(),
        channel_id=None,
        channel_name="orders",
        event="e",
        payload_json="{}",
        sender_id=None,
        sender_type="system",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return Queued(delivery, TOKEN, send_by)


def hosts(items: list[Queued]) -> list[str]:
    return [q.delivery.host for q in items]


def scheduler(**kw: int | float | None) -> HostScheduler:
    options = {"max_concurrency": 4, "per_host": 2, "prefetch_per_host": 2, "poll_interval": 0.5}
    return HostScheduler(**{**options, **kw})  # type: ignore[arg-type]


def test_limits_derive_from_the_options() -> None:
    s = scheduler(max_concurrency=4, per_host=9, prefetch_per_host=None)
    assert (s.per_host, s.hold_per_host, s.hold_total) == (4, 8, 8)  # per host <= overall
    s = scheduler(max_concurrency=0, per_host=0, prefetch_per_host=-3)
    assert (s.max_concurrency, s.per_host, s.hold_per_host) == (1, 1, 1)


def test_a_host_gets_at_most_its_slots_and_the_next_starts_when_one_frees() -> None:
    s = scheduler()
    room, held = s.claiming(0.0)
    assert (room, held) == (min(CLAIM_MAX, 8), {})
    step = s.took([item("a"), item("a"), item("a")], held, now=0.0)
    assert hosts(step.start) == ["a", "a"]  # per_host = 2; the third waits
    assert (s.sending_total, s.held_total) == (2, 3)
    step = s.sent("a", now=1.0)
    assert hosts(step.start) == ["a"]
    assert (s.sending_total, s.held_total) == (2, 2)


def test_the_overall_cap_binds_and_hosts_take_turns() -> None:
    s = scheduler(max_concurrency=2, per_host=2, prefetch_per_host=2)
    _, held = s.claiming(0.0)
    step = s.took([item("a"), item("a"), item("b"), item("b")], held, now=0.0)
    assert hosts(step.start) == ["a", "a"]
    # "a" frees a slot while the overall cap was binding: every host in turn, "b" first
    assert hosts(s.sent("a", now=1.0).start) == ["b"]
    assert hosts(s.sent("a", now=1.0).start) == ["b"]


def test_an_expired_lease_is_handed_back_never_started() -> None:
    s = scheduler()
    _, held = s.claiming(0.0)
    s.new_work = False
    step = s.took([item("a", send_by=1.0), item("a", send_by=1.0)], held, now=5.0)
    assert step.start == [] and len(step.expired) == 2
    assert step.wake and s.new_work  # its slot is free: claim again
    assert s.held_total == 0


def test_a_host_cut_by_its_room_asks_for_a_refill_when_it_runs_empty() -> None:
    s = scheduler(max_concurrency=4, per_host=1, prefetch_per_host=1)  # holds 2 per host
    _, held = s.claiming(0.0)
    step = s.took([item("a"), item("a")], held, now=0.0)  # as many as it may hold
    assert hosts(step.start) == ["a"]
    assert not s.refill
    step = s.sent("a", now=1.0)  # the queued one starts: the queue is empty
    assert hosts(step.start) == ["a"] and step.wake and s.refill
    assert s.claim_wanted(1.0) == 0.0  # refill at once, not at the next poll


def test_a_host_that_got_less_than_its_room_is_not_refilled() -> None:
    s = scheduler(max_concurrency=4, per_host=1, prefetch_per_host=1)
    _, held = s.claiming(0.0)
    s.took([item("a")], held, now=0.0)
    step = s.sent("a", now=1.0)
    assert step.start == [] and not step.wake and not s.refill


def test_when_to_claim() -> None:
    s = scheduler()
    assert s.claim_wanted(0.0) == 0.0  # new work, nothing held: at once
    _, held = s.claiming(0.0)
    assert s.claim_wanted(0.01) == s.poll_interval  # nothing new: the poll
    s.took([item("a")], held, now=0.0)
    s.new_work = True  # a NOTIFY while busy: at most every BUSY_NOTIFY_INTERVAL
    assert s.claim_wanted(0.01) == pytest.approx(BUSY_NOTIFY_INTERVAL - 0.01)
    full = scheduler(max_concurrency=1, per_host=1, prefetch_per_host=0)  # holds 2 in all
    _, held = full.claiming(0.0)
    full.took([item("a"), item("b")], held, now=0.0)
    full.new_work = True
    assert full.claim_wanted(1.0) == MIN_SLEEP  # no room: look again soon


def test_paused_starts_nothing_and_take_back_returns_the_queue() -> None:
    s = scheduler(per_host=1)
    _, held = s.claiming(0.0)
    s.took([item("a"), item("a"), item("b")], held, now=0.0)
    s.paused = True
    assert s.sent("a", now=1.0).start == []
    back = s.take_back()
    assert hosts(back) == ["a"]
    assert s.held_total == 1  # "b" is still sending
