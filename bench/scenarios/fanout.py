"""`bench fanout`: one channel, many subscribers, a few publishers: the cost of one
message delivered to everyone (the hub's fan-out) at rising publish rates."""

from __future__ import annotations

from bench.harness.sizes import Sizes
from bench.harness.stepped import Topology, run_stepped
from bench.harness.targets import Target

DEFAULTS = dict(subscribers=1000, publishers=4, rates=(5, 10, 15, 20, 25, 30, 40, 50, 75, 100))
QUICK = dict(subscribers=20, publishers=2, rates=(20, 50), warmup=0.3, duration=1.0)


def topology(s: Sizes) -> Topology:
    channel = "bench:fanout"
    return Topology(
        sub_channels=[[channel] for _ in range(s.subscribers)],
        pub_channels=[[channel] for _ in range(s.publishers)],
        route=lambda k: (k % s.publishers, channel),
    )


async def run(target: Target, s: Sizes) -> dict:
    return await run_stepped(target, s, topology(s))
