"""How long to wait between reconnection attempts: exponential backoff with full jitter.

Full jitter (a uniform delay between 0 and the current cap) spreads the reconnections of
thousands of clients dropped at the same moment (a server restart) instead of bringing
them back in synchronized waves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """`initial` seconds cap for the first retry, multiplied by `factor` after each
    failure up to `maximum`; `attempts` retries in a row before giving up (`None`:
    never give up). The first retry after a working connection drops comes at once
    when `immediate` is set, since most drops are one-off."""

    initial: float = 0.25
    maximum: float = 10.0
    factor: float = 2.0
    attempts: int | None = None
    immediate: bool = False

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.factor < 1:
            raise ValueError("Backoff needs 0 <= initial <= maximum and factor >= 1")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("Backoff.attempts must be at least 1 (or None for no limit)")

    def delays(self) -> Iterator[float]:
        """The delays before each attempt of one reconnection, jittered."""
        cap = self.initial
        count = 0
        while self.attempts is None or count < self.attempts:
            if count == 0 and self.immediate:
                yield 0.0
            else:
                yield random.uniform(0, cap)
                cap = min(self.maximum, cap * self.factor)
            count += 1
