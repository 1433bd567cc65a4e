"""Limits: token buckets per connection (every frame, subscribes, publishes), publish
budgets per user over all of the user's connections, and the subscription cap.

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

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend `amount` tokens (at most a full bucket's worth) if there are that many;
        False means the event is over the limit and nothing was spent."""
        self._refill(now)
        amount = min(amount, self.burst)
        if self._tokens >= amount - _EPSILON:
            self._tokens = max(0.0, self._tokens - amount)
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket is back to a full burst (it may as well not exist)."""
        self._refill(now)
        return self._tokens >= self.burst - _EPSILON

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
    presence_rate: float = 0.0  # presence_set frames per second
    presence_burst: float = 0.0

    def publish_bucket(self, now: float) -> TokenBucket | None:
        """A fresh bucket for a new connection, or None when publishing is unlimited."""
        return _bucket(self.publish_rate, self.publish_burst, now)

    def frame_bucket(self, now: float) -> TokenBucket | None:
        return _bucket(self.frame_rate, self.frame_burst, now)

    def subscribe_bucket(self, now: float) -> TokenBucket | None:
        return _bucket(self.subscribe_rate, self.subscribe_burst, now)

    def presence_bucket(self, now: float) -> TokenBucket | None:
        return _bucket(self.presence_rate, self.presence_burst, now)

    def presence_rate_limited_message(self) -> str:
        return _limit_message(
            self.presence_rate, self.presence_burst, "presence updates", "this state was not set"
        )

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

# Users with a bucket before idle ones are forgotten (a full bucket is no different
# from none); after each sweep the next comes at twice the users left.
_SWEEP_AT_LEAST = 1024


class UserBudgets:
    """Publishes and payload bytes per second per user (the token's sub) over all of the
    user's connections to this process, so opening more connections does not multiply
    what one account may write. Each bucket holds two seconds' worth; a payload larger
    than that needs a full bucket. 0 turns a budget off."""

    __slots__ = ("_buckets", "_sweep_at", "bytes_rate", "rate")

    def __init__(self, rate: float = 0.0, bytes_rate: float = 0.0) -> None:
        self.rate = rate
        self.bytes_rate = bytes_rate
        self._buckets: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}
        self._sweep_at = _SWEEP_AT_LEAST

    @property
    def enabled(self) -> bool:
        return self.rate > 0 or self.bytes_rate > 0

    def refusal(self, user: str, size: int, now: float) -> str | None:
        """Spend one publish of `size` payload bytes from `user`'s budgets, or say why
        not (nothing is spent then)."""
        buckets = self._buckets.get(user)
        if buckets is None:
            buckets = self._new_buckets(now)
            self._buckets[user] = buckets
        count, volume = buckets
        if count is not None and count.tokens(now) < 1 - _EPSILON:
            return (
                f"Rate limit exceeded: at most {self.rate:g} publishes per second"
                f" (burst {count.burst:g}) per user, over all connections;"
                " this message was not published"
            )
        if volume is not None and not volume.take(now, size):
            return (
                f"Rate limit exceeded: at most {self.bytes_rate:g} payload bytes per second"
                f" (burst {volume.burst:g}) per user, over all connections;"
                " this message was not published"
            )
        if count is not None:
            count.take(now)
        return None

    def _new_buckets(self, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        if len(self._buckets) >= self._sweep_at:
            self._buckets = {
                user: buckets
                for user, buckets in self._buckets.items()
                if not all(b is None or b.full(now) for b in buckets)
            }
            self._sweep_at = max(_SWEEP_AT_LEAST, 2 * len(self._buckets))
        count = TokenBucket(self.rate, max(1.0, 2 * self.rate), now) if self.rate > 0 else None
        volume = (
            TokenBucket(self.bytes_rate, max(1.0, 2 * self.bytes_rate), now)
            if self.bytes_rate > 0
            else None
        )
        return count, volume
