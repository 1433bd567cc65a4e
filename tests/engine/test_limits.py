"""The token bucket and connection limits, with an explicit clock (no sleeping)."""

from __future__ import annotations

import pytest

from pgrealtime.engine.limits import ConnectionLimits, TokenBucket

pytestmark = pytest.mark.pure


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    for _ in range(5):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token
    assert bucket.wait_time(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1)  # one token after 1/rate seconds
    assert not bucket.take(0.1)
    assert bucket.take(0.2)


def test_refill_never_exceeds_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=3, now=0.0)
    assert bucket.tokens(3600.0) == 3
    assert [bucket.take(3600.0) for _ in range(4)] == [True, True, True, False]


def test_sustained_rate_over_a_long_run() -> None:
    """Sending as fast as possible for 10 s lets through burst + rate * 10, no more."""
    bucket = TokenBucket(rate=50, burst=20, now=0.0)
    allowed = sum(bucket.take(i / 1000) for i in range(10_001))  # one try per ms
    assert allowed == 20 + 50 * 10


def test_a_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=10, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.05)
    assert bucket.take(10.1)


def test_fractional_rates() -> None:
    bucket = TokenBucket(rate=0.5, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(1.9)
    assert bucket.take(2.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (10, 0), (10, 0.5)])
def test_invalid_buckets_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst, now=0.0)


def test_connection_limits_zero_means_unlimited() -> None:
    unlimited = ConnectionLimits(publish_rate=0, publish_burst=200, max_subscriptions=0)
    assert unlimited.publish_bucket(0.0) is None
    assert not unlimited.too_many_subscriptions(10**6)


def test_connection_limits() -> None:
    limits = ConnectionLimits(publish_rate=100, publish_burst=200, max_subscriptions=2)
    bucket = limits.publish_bucket(0.0)
    assert bucket is not None and (bucket.rate, bucket.burst) == (100, 200)
    assert not limits.too_many_subscriptions(1)
    assert limits.too_many_subscriptions(2)
    assert "100 publishes per second" in limits.rate_limited_message()
    assert "burst 200" in limits.rate_limited_message()
    assert "at most 2" in limits.too_many_subscriptions_message()
    # a burst below one would never let anything through: it counts as one
    bucket = ConnectionLimits(publish_rate=5, publish_burst=0).publish_bucket(0.0)
    assert bucket is not None and bucket.burst == 1


def test_user_budgets_are_shared_by_key_and_forget_idle_users() -> None:
    from pgrealtime.engine.limits import UserBudgets

    budgets = UserBudgets(rate=1.0, bytes_rate=100.0)  # bursts 2 and 200
    assert budgets.refusal("u", 150, now=0.0) is None
    assert "bytes" in (budgets.refusal("u", 100, now=0.0) or "")  # 50 left
    assert budgets.refusal("u", 50, now=0.0) is None
    assert budgets.refusal("v", 1, now=0.0) is None  # another user: own buckets
    assert "publishes" in (budgets.refusal("u", 0, now=0.0) or "")  # 2 spent
    assert budgets.refusal("u", 10_000, now=10.0) is None  # larger than the burst: a full one
    for n in range(5000):  # idle users' full buckets are dropped as new ones come
        budgets.refusal(f"user{n}", 1, now=100.0 + n)
    assert len(budgets._buckets) < 5000
