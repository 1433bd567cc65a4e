"""`bench channels`: many channels, each watched by a few subscribers: routing and
per-channel state at scale rather than one wide fan-out."""

from __future__ import annotations

import random

from bench.harness.sizes import Sizes
from bench.harness.stepped import Topology, run_stepped
from bench.harness.targets import Target

DEFAULTS = dict(
    channels=10_000,
    subscribers=1000,
    publishers=10,
    rates=(500, 1000, 2000, 4000, 6000),
    p99_limit_ms=250.0,
)
QUICK = dict(channels=100, subscribers=20, publishers=2, rates=(100,), warmup=0.3, duration=1.0)


def topology(s: Sizes) -> Topology:
    """Channel c is watched by `subs_per_channel` distinct subscriber sessions spread
    evenly, and owned by publisher c % publishers; publishes visit the channels in a
    fixed shuffled order, so every channel gets the same share."""
    names = [f"bench:ch:{c}" for c in range(s.channels)]
    n, per = s.subscribers, s.subs_per_channel
    if per > n:
        raise ValueError("--subs-per-channel cannot exceed --subscribers")
    stride = n // per
    subs: list[list[str]] = [[] for _ in range(n)]
    for c, name in enumerate(names):
        for j in range(per):
            subs[(c + j * stride) % n].append(name)
    pubs: list[list[str]] = [[] for _ in range(s.publishers)]
    for c, name in enumerate(names):
        pubs[c % s.publishers].append(name)
    order = list(range(s.channels))
    random.Random(5).shuffle(order)
    return Topology(
        subs, pubs, lambda k: (order[k % len(order)] % s.publishers, names[order[k % len(order)]])
    )


async def run(target: Target, s: Sizes) -> dict:
    return await run_stepped(target, s, topology(s))
