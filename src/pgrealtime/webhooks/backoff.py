"""Retry policy (pure): which outcomes are worth another try, and when.

A receiver that is down, overloaded or slow should get the message once it recovers,
without a thundering herd when it does: exponential backoff with jitter spreads the
retries, and an explicit Retry-After from the receiver wins. Answers that will not
change on their own (most 4xx, 3xx since redirects are not followed) are final.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 3600.0
RETRYABLE_STATUSES = frozenset({408, 429})


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


def classify_status(status: int) -> Outcome:
    """2xx delivered; 5xx, 408 and 429 retried; anything else final."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status in RETRYABLE_STATUSES:
        return Outcome.RETRY
    return Outcome.FAILED


def backoff_delay(
    attempt: int,
    base: float = DEFAULT_BASE_DELAY,
    cap: float = DEFAULT_MAX_DELAY,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base * 2^(n-1),
    at most `cap`, with "equal jitter" (between half and all of it), so retries of
    many deliveries that failed together do not arrive together."""
    exponent = min(max(attempt, 1) - 1, 62)
    delay = min(cap, base * (2.0**exponent))
    draw = (rng or random).random()
    return delay / 2 + draw * delay / 2


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks us to wait (delta-seconds or an HTTP date),
    or None when it is absent or unreadable. Never negative."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
