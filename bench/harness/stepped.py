"""The five scenarios. Each drives one running target and returns plain dicts
(the report module prints them, the JSON file keeps them)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from pgrealtime.bench.loadgen import (
    Recorder,
    SendStats,
    Session,
    bounded_gather,
    make_http,
    now_ns,
    open_session,
    run_schedule,
)
from pgrealtime.bench.procstat import own_cpu_seconds
from pgrealtime.bench.servers import Target
from pgrealtime.bench.stats import summarize_ns


@dataclass
class Sizes:
    """Every knob of every scenario; `defaults(scenario, quick)` fills the rest."""

    subscribers: int = 0
    publishers: int = 0
    channels: int = 0
    subs_per_channel: int = 3
    clients: int = 0
    connections: int = 0
    sessions: int = 0
    rates: tuple[float, ...] = ()
    warmup: float = 1.0
    duration: float = 4.0
    drain: float = 5.0
    p99_limit_ms: float = 50.0
    concurrency: int = 100
    rest_seconds: float = 10.0
    payload_bytes: int = 64
    client: str = "fast"  # "fast" (lean protocol) or "aiohttp"
    rls_subscribers: int = 0  # changes: distinct users on the RLS table
    messages: int = 0  # webhooks: messages of the throughput phase (0: rate x time)
    outage_seconds: float = 60.0  # webhooks: how long the receiver is down
    database_url: str | None = None  # changes/webhooks: where to write (else the embedded one)


DEFAULTS: dict[str, dict] = {
    "fanout": dict(subscribers=1000, publishers=4, rates=(5, 10, 15, 20, 25, 30, 40, 50, 75, 100)),
    "channels": dict(
        channels=10_000,
        subscribers=1000,
        publishers=10,
        rates=(500, 1000, 2000, 4000, 6000),
        p99_limit_ms=250.0,
    ),
    "publish": dict(clients=200, rates=(500, 1000, 2000, 3000, 5000, 7000), p99_limit_ms=250.0),
    "idle": dict(connections=10_000, concurrency=200),
    "connect": dict(sessions=2000, concurrency=100),
}
QUICK: dict[str, dict] = {
    "fanout": dict(subscribers=20, publishers=2, rates=(20, 50), warmup=0.3, duration=1.0),
    "channels": dict(
        channels=100, subscribers=20, publishers=2, rates=(100,), warmup=0.3, duration=1.0
    ),
    "publish": dict(clients=10, rates=(100,), warmup=0.3, duration=1.0),
    "idle": dict(connections=50, concurrency=20, rest_seconds=1.0),
    "connect": dict(sessions=50, concurrency=10),
}


def sizes_for(scenario: str, quick: bool, overrides: dict) -> Sizes:
    values = dict((QUICK if quick else DEFAULTS)[scenario])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Sizes(**values)


# -- message scenarios: fanout, channels, publish ------------------------------------


@dataclass
class Topology:
    """Who subscribes where, who publishes, and where message k goes."""

    sub_channels: list[list[str]]  # per subscriber session
    pub_channels: list[list[str]]  # per publisher session (subscribed there too)
    route: Callable[[int], tuple[int, str]]  # message k -> (publisher number, channel)


def fanout_topology(s: Sizes) -> Topology:
    channel = "bench:fanout"
    return Topology(
        sub_channels=[[channel] for _ in range(s.subscribers)],
        pub_channels=[[channel] for _ in range(s.publishers)],
        route=lambda k: (k % s.publishers, channel),
    )


def channels_topology(s: Sizes) -> Topology:
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


def publish_topology(s: Sizes) -> Topology:
    """Every client publishes on its own channel; nobody else listens."""
    names = [f"bench:pub:{i}" for i in range(s.clients)]
    return Topology([], [[n] for n in names], lambda k: (k % s.clients, names[k % s.clients]))


async def _open_all(
    target: Target,
    wire: aiohttp.ClientSession | None,
    rec: Recorder,
    channel_lists: Sequence[Sequence[str]],
    first_index: int,
    concurrency: int,
) -> list[Session]:
    url = target.ws_url
    factories = [
        (
            lambda i=i, chans=chans: open_session(
                wire, url, first_index + i, rec, target.token(), chans
            )
        )
        for i, chans in enumerate(channel_lists)
    ]
    return await bounded_gather(factories, concurrency)


def quiet_gc() -> None:
    """Collect once, then keep the cyclic GC out of the measured windows: a full
    collection over a million tracker entries stalls the loop for tens of ms,
    which would show up as server latency."""
    gc.collect()
    gc.freeze()
    gc.disable()


def _wire(http: aiohttp.ClientSession, s: Sizes) -> aiohttp.ClientSession | None:
    """The aiohttp session when that client was chosen; None means the lean client."""
    return http if s.client == "aiohttp" else None


async def _close_all(sessions: Sequence[Session], concurrency: int = 500) -> None:
    async def close(s: Session) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(s.close(), 5)

    await bounded_gather([(lambda s=s: close(s)) for s in sessions], concurrency)


async def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - now_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


def _ms(values: array) -> dict:
    return summarize_ns(values).as_dict()


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
    async with make_http() as http:
        subs = await _open_all(target, _wire(http, s), rec, topo.sub_channels, 0, s.concurrency)
        pubs = await _open_all(
            target, _wire(http, s), rec, topo.pub_channels, len(subs), s.concurrency
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
                    await _sleep_until(at)
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
                if stop_on_degrade and result["degraded"]:
                    break
        finally:
            gc.enable()
            rss = probe.rss()
            await _close_all([*subs, *pubs])
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
        "errors_sample": rec.errors[:5],
        "server_rss_mb": None if rss is None else round(rss / 2**20, 1),
    }


def _other_pct(c0, c1, o0, o1, secs: float) -> float:
    """CPU % of everything on the host that is neither the server, PostgreSQL nor
    the generator (another job on the machine skews every figure)."""
    ours = (c1.server - c0.server) + (c1.postgres - c0.postgres) + sum(o1) - sum(o0)
    return round(max(0.0, 100 * ((c1.host - c0.host) - ours) / secs), 1)


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
    lat = _ms(rec.latencies[step])
    ack = _ms(rec.ack_latencies[step])
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
        "other_cpu_pct": _other_pct(c0, c1, o0, o1, secs),
        "server_cpu_us_per_delivery": (
            round(1e6 * server_cpu / deliveries, 2) if deliveries else None
        ),
        "server_cpu_us_per_publish": (round(1e6 * server_cpu / (a1 - a0), 1) if a1 > a0 else None),
        "server_rss_mb": round(c1.server_rss / 2**20, 1) if c1.server_rss else None,
        "missing_after_drain": missing,
        "unacked_after_drain": unacked,
        "degraded": bool(degraded),
    }


async def fanout(target: Target, s: Sizes) -> dict:
    return await run_stepped(target, s, fanout_topology(s))


async def channels(target: Target, s: Sizes) -> dict:
    return await run_stepped(target, s, channels_topology(s))


async def publish(target: Target, s: Sizes) -> dict:
    return await run_stepped(target, s, publish_topology(s))


# -- connection scenarios: idle, connect ----------------------------------------------


async def idle(target: Target, s: Sizes) -> dict:
    """RSS grown by N authenticated, subscribed, silent sessions, and the CPU the
    server burns while they sit there."""
    rec = Recorder()
    probe = target.probe
    async with make_http() as http:
        warm = await _open_all(target, _wire(http, s), rec, [["bench:idle:warm"]] * 10, 0, 10)
        await _close_all(warm)
        await asyncio.sleep(1.0)
        gc.collect()
        rss0 = probe.rss()
        t = now_ns()
        chans = [[f"bench:idle:{i % 100}"] for i in range(s.connections)]
        sessions = await _open_all(target, _wire(http, s), rec, chans, 100, s.concurrency)
        open_s = (now_ns() - t) / 1e9
        await asyncio.sleep(2.0)
        probe.refresh()
        rss1 = probe.rss()
        c0, w0 = probe.sample(), now_ns()
        await asyncio.sleep(s.rest_seconds)
        c1, w1 = probe.sample(), now_ns()
        still_open = sum(1 for x in sessions if not x.closed)
        await _close_all(sessions)
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


async def connect(target: Target, s: Sizes) -> dict:
    """A storm of connect + auth + subscribe with a fixed number in flight
    (closed loop: this measures capacity, sessions established per second)."""
    rec = Recorder()
    probe = target.probe
    url = target.ws_url
    tokens = [target.token() for _ in range(s.sessions)]
    latencies = array("q")
    failures: list[str] = []

    async with make_http() as http:

        async def one(i: int) -> Session | None:
            t = now_ns()
            try:
                session = await open_session(
                    _wire(http, s), url, i, rec, tokens[i], [f"bench:conn:{i % 100}"]
                )
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return None
            latencies.append(now_ns() - t)
            return session

        probe.refresh()
        c0, t0, o0 = probe.sample(), now_ns(), own_cpu_seconds()
        sessions = await bounded_gather(
            [(lambda i=i: one(i)) for i in range(s.sessions)], s.concurrency
        )
        c1, t1, o1 = probe.sample(), now_ns(), own_cpu_seconds()
        opened = [x for x in sessions if x is not None]
        await _close_all(opened)
    secs = (t1 - t0) / 1e9
    return {
        "sessions": s.sessions,
        "concurrency": s.concurrency,
        "established": len(opened),
        "failed": len(failures),
        "failures_sample": failures[:5],
        "seconds": round(secs, 2),
        "sessions_per_s": round(len(opened) / secs, 1),
        "session_latency": _ms(latencies),
        "server_cpu_pct": round(100 * (c1.server - c0.server) / secs, 1),
        "postgres_cpu_pct": round(100 * (c1.postgres - c0.postgres) / secs, 1),
        "loadgen_cpu_pct": round(100 * (sum(o1) - sum(o0)) / secs, 1),
        "other_cpu_pct": _other_pct(c0, c1, o0, o1, secs),
        "server_cpu_us_per_session": (
            round(1e6 * (c1.server - c0.server) / len(opened), 1) if opened else None
        ),
    }


SCENARIOS = {
    "fanout": fanout,
    "channels": channels,
    "publish": publish,
    "idle": idle,
    "connect": connect,
}


# -- scenarios in their own modules (imported when run) -------------------------------


async def changes(target: Target, s: Sizes) -> dict:
    from pgrealtime.bench.changes_scenario import run

    return await run(target, s)


async def webhooks(target: Target, s: Sizes) -> dict:
    from pgrealtime.bench.webhooks_scenario import run

    return await run(target, s)


SCENARIOS["changes"] = changes
SCENARIOS["webhooks"] = webhooks
DEFAULTS["changes"] = dict(
    subscribers=100,
    publishers=16,
    rates=(1000,),
    warmup=2.0,
    duration=10.0,
    drain=30.0,
    rls_subscribers=1000,
)
QUICK["changes"] = dict(
    subscribers=5, publishers=2, rates=(100,), warmup=0.3, duration=1.0, rls_subscribers=20
)
DEFAULTS["webhooks"] = dict(publishers=4, rates=(1500, 200), warmup=2.0, duration=10.0, drain=60.0)
QUICK["webhooks"] = dict(
    publishers=2, rates=(200, 50), warmup=0.3, duration=1.5, drain=30.0, outage_seconds=3.0
)
# these measure their baseline inside the server run and return {"server", "baseline"}
OWN_BASELINE = {"changes", "webhooks"}
# extra `pgrealtime serve` flags: the webhook receiver is on loopback
SERVER_ARGS = {"webhooks": ["--webhook-allow-private-networks"]}
