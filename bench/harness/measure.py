"""Measuring helpers every scenario shares: keeping the GC out of measured windows,
waiting for a moment on the generator's clock, the CPU of a window (server,
PostgreSQL, generator, anything else on the host) and polling counters until the
deliveries have arrived."""

from __future__ import annotations

import asyncio
import gc
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.harness.loadgen import now_ns
from bench.harness.procstat import ServerProbe, cpu_seconds, own_cpu_seconds
from bench.harness.stats import summarize_ns


def quiet_gc() -> None:
    """Collect once, then keep the cyclic GC out of the measured windows: a full
    collection over a million tracker entries stalls the loop for tens of ms,
    which would show up as server latency."""
    gc.collect()
    gc.freeze()
    gc.disable()


async def sleep_until(t_ns: int) -> None:
    """Sleep until `now_ns()` reaches `t_ns` (at once when it already has)."""
    delay = (t_ns - now_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


def ms(values: array) -> dict:
    """A latency summary (ns samples) as the report prints it."""
    return summarize_ns(values).as_dict()


def other_cpu_pct(c0, c1, o0, o1, secs: float) -> float:
    """CPU % of everything on the host that is neither the server, PostgreSQL nor
    the generator (another job on the machine skews every figure)."""
    ours = (c1.server - c0.server) + (c1.postgres - c0.postgres) + sum(o1) - sum(o0)
    return round(max(0.0, 100 * ((c1.host - c0.host) - ours) / secs), 1)


@dataclass
class Window:
    """CPU and counters at the two ends of a measured window: `deliveries()` counts
    what arrived, `extra()` what was committed (or written). `helper_pid`: a child of
    the generator (the writers' process), whose CPU is reported apart and is not
    counted as "other" load."""

    probe: ServerProbe
    deliveries: Callable[[], int]
    marks: dict[str, tuple] = field(default_factory=dict)
    helper_pid: int | None = None
    helper_cpu: dict[str, float] = field(default_factory=dict)

    async def mark(self, name: str, at: int, extra: Callable[[], int] = lambda: 0) -> None:
        await sleep_until(at)
        self.marks[name] = (
            now_ns(),
            self.probe.sample(),
            self.deliveries(),
            own_cpu_seconds(),
            extra(),
        )
        if self.helper_pid is not None:
            try:
                self.helper_cpu[name] = cpu_seconds(self.helper_pid)
            except (OSError, ValueError, IndexError):
                self.helper_cpu[name] = float("nan")

    def figures(self) -> dict:
        (w0, c0, d0, o0, x0), (w1, c1, d1, o1, x1) = self.marks["t0"], self.marks["t1"]
        secs = (w1 - w0) / 1e9
        deliveries = d1 - d0
        server_cpu = c1.server - c0.server
        helper = 0.0
        if self.helper_pid is not None:
            helper = self.helper_cpu["t1"] - self.helper_cpu["t0"]
        return {
            "seconds": round(secs, 2),
            "deliveries": deliveries,
            "deliveries_per_s": round(deliveries / secs, 1),
            "committed_per_s": round((x1 - x0) / secs, 1),
            "server_cpu_pct": round(100 * server_cpu / secs, 1),
            "postgres_cpu_pct": round(100 * (c1.postgres - c0.postgres) / secs, 1),
            "loadgen_cpu_pct": round(100 * (sum(o1) - sum(o0)) / secs, 1),
            "other_cpu_pct": other_cpu_pct(c0, c1, o0, (*o1, helper), secs),
            **({"writers_cpu_pct": round(100 * helper / secs, 1)} if self.helper_pid else {}),
            "server_cpu_us_per_delivery": (
                round(1e6 * server_cpu / deliveries, 2) if deliveries else None
            ),
            "server_rss_mb": round(c1.server_rss / 2**20, 1) if c1.server_rss else None,
        }


async def wait_until(done: Callable[[], bool], seconds: float) -> None:
    """Poll `done()` (counters bumped by many receivers) until true or `seconds` pass."""
    deadline = now_ns() + int(seconds * 1e9)
    while not done() and now_ns() < deadline:  # noqa: ASYNC110 - polled counters
        await asyncio.sleep(0.02)


async def wait_for_arrivals(
    count: Callable[[], int], expected: int, seconds: float, idle_s: float = 5.0
) -> None:
    """Wait `seconds` for `count()` to reach `expected`, then on while it still grows
    (at most 300 s more): on a starved machine deliveries come late, and late is not
    lost. What is missing once nothing has arrived for `idle_s` counts as lost."""
    await wait_until(lambda: count() >= expected, seconds)
    deadline = now_ns() + 300 * 10**9
    last = count()
    while last < expected and now_ns() < deadline:
        await wait_until(lambda: count() >= expected, idle_s)
        if count() == last:
            return
        last = count()
