"""Pure statistics for the benchmark: latency percentiles and sequence tracking.

Nothing here touches the network or the clock, so the numbers the report prints
can be checked by unit tests alone.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values.

    Nearest-rank never interpolates, so a reported p99 is a latency some message
    really had; an empty sample gives NaN rather than a made-up zero."""
    if not sorted_values:
        return math.nan
    if q <= 0:
        return float(sorted_values[0])
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


@dataclass(frozen=True)
class LatencySummary:
    """Latency of one measured window, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize_ns(samples_ns: Iterable[int]) -> LatencySummary:
    """Summarise latencies given in nanoseconds (the clock's own unit, no rounding
    until the end)."""
    values = sorted(samples_ns)
    ms = 1e-6
    return LatencySummary(
        count=len(values),
        p50_ms=percentile(values, 50) * ms,
        p90_ms=percentile(values, 90) * ms,
        p99_ms=percentile(values, 99) * ms,
        max_ms=(values[-1] * ms) if values else math.nan,
    )


@dataclass(frozen=True)
class SequenceReport:
    """What a set of receivers got, compared with what was sent.

    `lost` counts expected deliveries never seen; `duplicated` counts repeats of a
    sequence number already seen; `reordered` counts messages that arrived after a
    later one of the same stream; `unexpected` counts deliveries on streams (or
    beyond the sent count) that nobody sent to that receiver."""

    expected: int
    received: int
    lost: int
    duplicated: int
    reordered: int
    unexpected: int

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.unexpected)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SequenceTracker:
    """Follows per-stream sequence numbers (0, 1, 2, ...) as they arrive.

    A stream key is whatever identifies one ordered flow at one receiver, e.g.
    (receiver, publisher, channel). The common case (the next number) costs one
    dict lookup and two list updates; gaps are remembered so that a late arrival
    is told apart from a duplicate."""

    __slots__ = ("_streams", "duplicated", "reordered", "unique")

    def __init__(self) -> None:
        # key -> [next_expected, missing set or None, unique count]
        self._streams: dict[Hashable, list] = {}
        self.unique = 0
        self.duplicated = 0
        self.reordered = 0

    def observe(self, key: Hashable, seq: int) -> None:
        state = self._streams.get(key)
        if state is None:
            state = self._streams[key] = [0, None, 0]
        nxt = state[0]
        if seq == nxt:
            state[0] = nxt + 1
        elif seq > nxt:
            missing = state[1]
            if missing is None:
                missing = state[1] = set()
            missing.update(range(nxt, seq))
            state[0] = seq + 1
        else:
            missing = state[1]
            if missing is not None and seq in missing:
                missing.discard(seq)
                self.reordered += 1
            else:
                self.duplicated += 1
                return
        state[2] += 1
        self.unique += 1

    def received(self, key: Hashable) -> int:
        state = self._streams.get(key)
        return 0 if state is None else state[2]

    def report(self, expected: Mapping[Hashable, int]) -> SequenceReport:
        """Compare with the number of messages sent on each stream key
        (numbers 0..n-1 were sent, so anything at or beyond n is unexpected)."""
        lost = 0
        unexpected = 0
        total_expected = 0
        for key, count in expected.items():
            total_expected += count
            state = self._streams.get(key)
            if state is None:
                lost += count
                continue
            missing = state[1] or ()
            beyond = max(0, state[0] - count)  # highest seen beyond what was sent
            beyond -= sum(1 for s in missing if s >= count)
            got = state[2] - beyond
            unexpected += beyond
            lost += count - got
        for key, state in self._streams.items():
            if key not in expected:
                unexpected += state[2]
        return SequenceReport(
            expected=total_expected,
            received=self.unique,
            lost=lost,
            duplicated=self.duplicated,
            reordered=self.reordered,
            unexpected=unexpected,
        )


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, or None when either is missing or the base is zero."""
    if value is None or base is None or not base or math.isnan(value) or math.isnan(base):
        return None
    return value / base
