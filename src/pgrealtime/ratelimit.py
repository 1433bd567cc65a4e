"""Per-connection limits: token buckets (every frame, subscribes, publishes) and the
subscription cap.

Pure arithmetic, no clock and no I/O: the caller passes the time (seconds from a
monotonic clock), so the rules can be tested without sleeping and the publish path
pays for one subtraction and one comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

# Refills add up floating-point fractions: 0.5 + 0.5 tokens may come to 0.9999999999999964.
_EPSILON = 1e-9


class TokenBucket:
    """Allows `rate` events per second on average and up to `burst` back to back.

    The bucket starts full, so a client that has been quiet may send a whole burst at
    once; after that it gets one token every 1/rate seconds, never more than `burst`.
    """

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:  # a clock that stands still or steps back adds nothing
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means the event is over the limit."""
        self._refill(now)
        if self._tokens >= 1 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at `now` (for tests and diagnostics)."""
        self._refill(now)
        return self._tokens

    def wait_time(self, now: float) -> float:
        """Seconds until the next token is available (0 if one is available now)."""
        self._refill(now)
        return max(0.0, (1 - _EPSILON - self._tokens) / self.rate)


def _bucket(rate: float, burst: float, now: float) -> TokenBucket | None:
    return TokenBucket(rate, max(1.0, burst), now) if rate > 0 else None


def _limit_message(rate: float, burst: float, what: str, outcome: str) -> str:
    return (
        f"Rate limit exceeded: at most {rate:g} {what} per second"
        f" (burst {max(1.0, burst):g}) per connection; {outcome}"
    )


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one WebSocket connection may do; 0 means unlimited."""

    publish_rate: float = 0.0  # publishes per second
    publish_burst: float = 0.0  # publishes back to back after a quiet spell
    max_subscriptions: int = 0
    frame_rate: float = 0.0  # frames of any type per second
    frame_burst: float = 0.0
    subscribe_rate: float = 0.0  # subscribe frames per second
    subscribe_burst: float = 0.0

    def publish_bucket(self, now: float) -> TokenBucket | None:
        """A fresh bucket for a new connection, or None when publishing is unlimited."""
        return _bucket(self.publish_rate, self.publish_burst, now)

    def frame_bucket(self, now: float) -> TokenBucket | None:
        return _bucket(self.frame_rate, self.frame_burst, now)

    def subscribe_bucket(self, now: float) -> TokenBucket | None:
        return _bucket(self.subscribe_rate, self.subscribe_burst, now)

    def rate_limited_message(self) -> str:
        return _limit_message(
            self.publish_rate, self.publish_burst, "publishes", "this message was not published"
        )

    def frame_rate_limited_message(self) -> str:
        return _limit_message(
            self.frame_rate, self.frame_burst, "frames", "this frame was not acted on"
        )

    def subscribe_rate_limited_message(self) -> str:
        return _limit_message(
            self.subscribe_rate, self.subscribe_burst, "subscribes", "this subscribe was refused"
        )

    def too_many_subscriptions(self, current: int) -> bool:
        """Whether a connection holding `current` subscriptions may not add another."""
        return 0 < self.max_subscriptions <= current

    def too_many_subscriptions_message(self) -> str:
        return (
            f"Too many subscriptions: at most {self.max_subscriptions} per connection;"
            " unsubscribe from a channel first"
        )


UNLIMITED = ConnectionLimits()
