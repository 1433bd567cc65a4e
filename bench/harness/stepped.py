"""The stepped run behind fanout, channels and publish: one set of sessions, then
open-loop steps of rising publish rate, each with a warm-up, a measured window and
a drain, until a step degrades. A scenario gives only its `Topology`: who
subscribes where and where message k goes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from bench.harness.loadgen import (
    Recorder,
    SendStats,
    Session,
    bounded_gather,
    close_all,
    make_http,
    now_ns,
    open_session,
    run_schedule,
    wire,
)
from bench.harness.measure import ms, other_cpu_pct, quiet_gc, sleep_until
from bench.harness.procstat import own_cpu_seconds
from bench.harness.sizes import Sizes
from bench.harness.stats import summarize_ns
from bench.harness.targets import Target
from pgrealtime.util.progress import note


@dataclass
class Topology:
    """Who subscribes where, who publishes, and where message k goes."""

    sub_channels: list[list[str]]  # per subscriber session
    pub_channels: list[list[str]]  # per publisher session (subscribed there too)
    route: Callable[[int], tuple[int, str]]  # message k -> (publisher number, channel)


async def open_all(
    target: Target,
    wire: aiohttp.ClientSession | None,
    rec: Recorder,
    channel_lists: Sequence[Sequence[str]],
    first_index: int,
    concurrency: int,
    protocol: str = "raw",
) -> list[Session]:
    """Open one session per entry of `channel_lists` (subscribed to those channels),
    indexes from `first_index`, `concurrency` at a time, speaking `protocol`."""
    url = target.ws_url
    opener = open_session
    if protocol == "socketio":
        from bench.harness.socketio_client import open_sio_session

        def opener(_wire, url, index, rec, token, chans):
            return open_sio_session(url, index, rec, token, chans)

    factories = [
        (lambda i=i, chans=chans: opener(wire, url, first_index + i, rec, target.token(), chans))
        for i, chans in enumerate(channel_lists)
    ]
    return await bounded_gather(factories, concurrency)


async def run_stepped(
    target: Target, s: Sizes, topo: Topology, stop_on_degrade: bool = True
) -> dict:
    """Open-loop steps of rising rate over one set of sessions.

    Each step: warm-up (not measured), a measured window, then a drain that waits
    for every expected delivery. Stops after the first step whose p99 passes the
    limit or that misses a delivery."""
    rec = Recorder()
    probe = target.probe
    pad = "x" * s.payload_bytes
    t_setup = now_ns()
    note(f"[bench] opening {len(topo.sub_channels) + len(topo.pub_channels)} sessions")
    async with make_http() as http:
        subs = await open_all(
            target, wire(http, s.client), rec, topo.sub_channels, 0, s.concurrency, s.protocol
        )
        pubs = await open_all(
            target,
            wire(http, s.client),
            rec,
            topo.pub_channels,
            len(subs),
            s.concurrency,
            s.protocol,
        )
        setup_s = (now_ns() - t_setup) / 1e9
        receivers: dict[str, int] = {}
        for session_channels in (*topo.sub_channels, *topo.pub_channels):
            for ch in session_channels:
                receivers[ch] = receivers.get(ch, 0) + 1
        sent: dict[tuple[int, str], int] = {}  # (publisher session index, channel) -> count
        expected_total = 0
        steps: list[dict] = []
        try:
            quiet_gc()
            for step, rate in enumerate(s.rates):
                probe.refresh()
                start = now_ns() + 100_000_000
                t0 = start + int(s.warmup * 1e9)
                t1 = t0 + int(s.duration * 1e9)
                rec.open_window(step, t0, t1)
                send_stats = SendStats()
                marks: dict[str, tuple] = {}

                async def sample(name: str, at: int, marks: dict = marks) -> None:
                    await sleep_until(at)
                    marks[name] = (
                        now_ns(),
                        probe.sample(),
                        rec.deliveries,
                        rec.acks,
                        own_cpu_seconds(),
                    )

                def send(k: int, due: int, step: int = step) -> object:
                    nonlocal expected_total
                    p, ch = topo.route(k)
                    pub = pubs[p]
                    key = (pub.index, ch)
                    seq = sent.get(key, 0)
                    sent[key] = seq + 1
                    expected_total += receivers[ch]
                    return pub.publish(ch, step, pub.index, seq, due, pad)

                await asyncio.gather(
                    run_schedule(rate, s.warmup + s.duration, start, send, send_stats),
                    sample("t0", t0),
                    sample("t1", t1),
                )
                # drain: every expected delivery and every ack, or time out
                deadline = now_ns() + int(s.drain * 1e9)
                rejected = _rejected_deliveries(rec, receivers)
                while now_ns() < deadline and (
                    rec.tracker.unique + rejected < expected_total or any(p.unacked for p in pubs)
                ):
                    await asyncio.sleep(0.02)
                    rejected = _rejected_deliveries(rec, receivers)
                result = _step_result(
                    rate, s, rec, step, marks, send_stats, expected_total, rejected, pubs
                )
                steps.append(result)
                note(
                    f"[bench] step {step + 1}/{len(s.rates)}: {rate:g} publishes/s offered,"
                    f" {result['deliveries_per_s']:g} deliveries/s,"
                    f" p99 {result['latency'].get('p99_ms')} ms"
                    + (" (degraded)" if result["degraded"] else "")
                )
                if stop_on_degrade and result["degraded"]:
                    break
        finally:
            gc.enable()
            rss = probe.rss()
            await close_all([*subs, *pubs])
    expected = {}
    subscribers_of: dict[str, list[int]] = {}
    for sess, chans in zip([*subs, *pubs], [*topo.sub_channels, *topo.pub_channels], strict=True):
        for ch in chans:
            subscribers_of.setdefault(ch, []).append(sess.index)
    for (p, ch), n in sent.items():
        for r in subscribers_of[ch]:
            expected[(r, p, ch)] = n
    seq = rec.tracker.report(expected).as_dict()
    rejected_publishes = sum(rec.rejected.values())
    seq["lost"] = max(0, seq["lost"] - _rejected_deliveries(rec, receivers))
    return {
        "setup_seconds": round(setup_s, 2),
        "sessions": len(subs) + len(pubs),
        "subscriptions": sum(len(c) for c in (*topo.sub_channels, *topo.pub_channels)),
        "steps": steps,
        "sequence": seq,
        "publishes_sent": sum(sent.values()),
        "publishes_rejected": rejected_publishes,
        "unacked": sum(p.unacked for p in pubs),
        "sessions_dropped": rec.dropped,
        "malformed": rec.malformed,
        "system_events": rec.system_events,  # presence join/leave: counted, not checked
        "errors_sample": rec.errors[:5],
        "server_rss_mb": None if rss is None else round(rss / 2**20, 1),
    }


def _rejected_deliveries(rec: Recorder, receivers: dict[str, int]) -> int:
    return sum(n * receivers.get(ch, 0) for (_, ch), n in rec.rejected.items())


def _step_result(
    rate: float,
    s: Sizes,
    rec: Recorder,
    step: int,
    marks: dict,
    send_stats: SendStats,
    expected_total: int,
    rejected: int,
    pubs: Sequence[Session],
) -> dict:
    (w0, c0, d0, a0, o0), (w1, c1, d1, a1, o1) = marks["t0"], marks["t1"]
    secs = (w1 - w0) / 1e9
    deliveries = d1 - d0
    server_cpu = c1.server - c0.server
    lat = ms(rec.latencies[step])
    ack = ms(rec.ack_latencies[step])
    lag = summarize_ns(send_stats.lag_ns)
    missing = expected_total - rejected - rec.tracker.unique
    unacked = sum(p.unacked for p in pubs)
    degraded = (
        (not lat["count"] and not ack["count"])
        or (lat["count"] and lat["p99_ms"] > s.p99_limit_ms)
        or (not lat["count"] and ack["p99_ms"] > s.p99_limit_ms)
        or missing > 0
        or unacked > 0
        or (a1 - a0) / secs < 0.9 * rate  # the server no longer keeps up
        or bool(rec.rejected)
    )
    return {
        "rate_offered": rate,
        "publishes_per_s": round((a1 - a0) / secs, 1),
        "deliveries_per_s": round(deliveries / secs, 1),
        "latency": lat,
        "ack_latency": ack,
        "send_lag_p99_ms": lag.p99_ms,
        "server_cpu_pct": round(100 * server_cpu / secs, 1),
        "server_sys_pct": round(100 * (c1.server_sys - c0.server_sys) / secs, 1),
        "postgres_cpu_pct": round(100 * (c1.postgres - c0.postgres) / secs, 1),
        "loadgen_cpu_pct": round(100 * (sum(o1) - sum(o0)) / secs, 1),
        "loadgen_sys_pct": round(100 * (o1[1] - o0[1]) / secs, 1),
        "other_cpu_pct": other_cpu_pct(c0, c1, o0, o1, secs),
        "server_cpu_us_per_delivery": (
            round(1e6 * server_cpu / deliveries, 2) if deliveries else None
        ),
        "server_cpu_us_per_publish": (round(1e6 * server_cpu / (a1 - a0), 1) if a1 > a0 else None),
        "server_rss_mb": round(c1.server_rss / 2**20, 1) if c1.server_rss else None,
        "missing_after_drain": missing,
        "unacked_after_drain": unacked,
        "degraded": bool(degraded),
    }
