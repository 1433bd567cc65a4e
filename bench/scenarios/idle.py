"""`bench idle`: what silent sessions cost: memory per authenticated, subscribed
connection, and the CPU the server burns while they sit there."""

from __future__ import annotations

import asyncio
import gc

from bench.harness.loadgen import Recorder, close_all, make_http, now_ns, wire
from bench.harness.sizes import Sizes
from bench.harness.stepped import open_all
from bench.harness.targets import Target

DEFAULTS = dict(connections=10_000, concurrency=200)
QUICK = dict(connections=50, concurrency=20, rest_seconds=1.0)


async def run(target: Target, s: Sizes) -> dict:
    """RSS grown by N authenticated, subscribed, silent sessions, and the CPU the
    server burns while they sit there."""
    rec = Recorder()
    probe = target.probe
    async with make_http() as http:
        warm = await open_all(target, wire(http, s.client), rec, [["bench:idle:warm"]] * 10, 0, 10)
        await close_all(warm)
        await asyncio.sleep(1.0)
        gc.collect()
        rss0 = probe.rss()
        t = now_ns()
        chans = [[f"bench:idle:{i % 100}"] for i in range(s.connections)]
        sessions = await open_all(target, wire(http, s.client), rec, chans, 100, s.concurrency)
        open_s = (now_ns() - t) / 1e9
        await asyncio.sleep(2.0)
        probe.refresh()
        rss1 = probe.rss()
        c0, w0 = probe.sample(), now_ns()
        await asyncio.sleep(s.rest_seconds)
        c1, w1 = probe.sample(), now_ns()
        still_open = sum(1 for x in sessions if not x.closed)
        await close_all(sessions)
    secs = (w1 - w0) / 1e9
    per_conn = None if rss0 is None or rss1 is None else (rss1 - rss0) / s.connections
    return {
        "connections": s.connections,
        "open_seconds": round(open_s, 2),
        "server_rss_before_mb": None if rss0 is None else round(rss0 / 2**20, 1),
        "server_rss_after_mb": None if rss1 is None else round(rss1 / 2**20, 1),
        "kb_per_connection": None if per_conn is None else round(per_conn / 1024, 2),
        "rest_seconds": round(secs, 1),
        "server_cpu_pct_at_rest": round(100 * (c1.server - c0.server) / secs, 2),
        "postgres_cpu_pct_at_rest": round(100 * (c1.postgres - c0.postgres) / secs, 2),
        "host_cpu_pct_at_rest": round(100 * (c1.host - c0.host) / secs, 2),
        "sessions_dropped": s.connections - still_open,
        "errors_sample": rec.errors[:5],
    }
