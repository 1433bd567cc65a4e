"""`bench publish`: many clients publishing, each on its own channel with nobody else
listening: the publish path (authorize, store, acknowledge) without fan-out."""

from __future__ import annotations

from bench.harness.sizes import Sizes
from bench.harness.stepped import Topology, run_stepped
from bench.harness.targets import Target

DEFAULTS = dict(clients=200, rates=(500, 1000, 2000, 3000, 5000, 7000), p99_limit_ms=250.0)
QUICK = dict(clients=10, rates=(100,), warmup=0.3, duration=1.0)


def topology(s: Sizes) -> Topology:
    """Every client publishes on its own channel; nobody else listens."""
    names = [f"bench:pub:{i}" for i in range(s.clients)]
    return Topology([], [[n] for n in names], lambda k: (k % s.clients, names[k % s.clients]))


async def run(target: Target, s: Sizes) -> dict:
    return await run_stepped(target, s, topology(s))
