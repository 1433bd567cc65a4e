"""`pgrealtime bench webhooks`: webhook delivery throughput, and recovery from an outage.

A receiver (aiohttp, 127.0.0.1, in the generator's process) records every request:
its delivery id header, and the phase, writer and sequence number carried in the
message payload. The channel `bench:hook:*` lists it in `webhookUrls`; the server
runs with `--webhook-allow-private-networks` so it may reach loopback.

Messages are published with `realtime.publish()` from SQL by the generator's writer
connections, on an open-loop schedule. That keeps the WebSocket publish path (measured
by `bench publish`) out of the figures: what is measured is the webhook pipeline, the
enqueue trigger, claiming, the POST and recording the outcome.

1. **Throughput.** `--rates` first value (default 1,500/s, above the 1,000/s target) for
   warm-up + duration seconds (or `--messages`). Deliveries/s at the receiver over the
   measured window, and from the first publish to the last delivery.
2. **Outage.** `--rates` second value (default 200/s) for a few seconds, then the receiver
   is stopped for `--outage-seconds` while publishing goes on, then started again on the
   same port. Every message must arrive at least once; repeats of a delivery id are
   counted as duplicates; the time from the restart until every message has arrived
   is the drain time (the first success after the outage makes the deliveries in
   backoff due at once, see docs/webhooks.md; publishing goes on for a few seconds
   after the restart, so the drain cannot end before that).
3. **Baseline.** The same receiver driven by a bare aiohttp client POST loop in this
   process, with 8 requests in flight (the server's per-host limit until it became
   32; kept so figures stay comparable) and requests built
   by the server's own payload code: what receiver and loopback HTTP take without a
   queue in PostgreSQL. Client and receiver share one core, so it is a lower bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from array import array
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from bench.harness.database import PUBLISH_ROW, PUBLISH_ROWS, SqlWriters, database_url
from bench.harness.loadgen import SendStats, now_ns, run_schedule
from bench.harness.measure import Window, quiet_gc, sleep_until, wait_until
from bench.harness.sizes import Sizes
from bench.harness.stats import summarize_ns
from bench.harness.targets import Target
from pgrealtime.webhooks import payload as hook_payload

HOOK_PATTERN = "bench:hook:*"
HOOK_CHANNEL = "bench:hook:0"
PHASE_RATE, PHASE_OUTAGE, PHASE_BASELINE = 0, 1, 2
TARGET_PER_S = 1000.0
PER_HOST = 8  # baseline requests in flight (the worker's former per-host limit; kept)

DEFAULTS = dict(publishers=4, rates=(1500, 200), warmup=2.0, duration=10.0, drain=60.0)
QUICK = dict(
    publishers=2, rates=(200, 50), warmup=0.3, duration=1.5, drain=30.0, outage_seconds=3.0
)


class HookReceiver:
    """Records webhook requests; can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.requests = 0
        self.phase_requests: dict[int, int] = {}
        self.phase_unique: dict[int, int] = {}
        self.by_delivery: dict[str, tuple] = {}  # delivery id -> message key
        self.receipts: dict[tuple, int] = {}  # (phase, writer, seq) -> requests
        self.duplicates = 0
        self.retried = 0  # requests with X-InsForge-Attempt > 1
        self.max_attempt = 0
        self.last_unique_ns = 0
        self.windows: dict[int, tuple[int, int]] = {}
        self.latencies: dict[int, array] = {}
        self.bad = 0
        self.bad_samples: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listening socket and every connection: the server's requests are
        refused until `start()` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def open_window(self, phase: int, t0: int, t1: int) -> None:
        self.windows[phase] = (t0, t1)
        self.latencies[phase] = array("q")

    def _bad(self, why: str) -> web.Response:
        self.bad += 1
        if len(self.bad_samples) < 5:
            self.bad_samples.append(why)
        return web.Response(text="ok")  # not worth a retry: counted instead

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = now_ns()
        self.requests += 1
        delivery_id = request.headers.get(hook_payload.DELIVERY_ID_HEADER)
        try:
            p = orjson.loads(body)["payload"]
            key = (p["k"], p["w"], p["s"])
            sched = p["t"]
            attempt = int(request.headers.get(hook_payload.ATTEMPT_HEADER, "1"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return self._bad(body[:200].decode(errors="replace"))
        if not delivery_id:
            return self._bad("no delivery id header")
        phase = key[0]
        self.phase_requests[phase] = self.phase_requests.get(phase, 0) + 1
        if attempt > 1:
            self.retried += 1
        self.max_attempt = max(self.max_attempt, attempt)
        known = self.by_delivery.get(delivery_id)
        if known is None:
            self.by_delivery[delivery_id] = key
        elif known != key:
            return self._bad(f"delivery id {delivery_id} carried {known} and {key}")
        else:
            self.duplicates += 1
        n = self.receipts.get(key, 0)
        self.receipts[key] = n + 1
        if n == 0:
            self.phase_unique[phase] = self.phase_unique.get(phase, 0) + 1
            self.last_unique_ns = received
            window = self.windows.get(phase)
            if window is not None and window[0] <= sched < window[1]:
                self.latencies[phase].append(received - sched)
        return web.Response(text="ok")

    def lost(self, phase: int, seqs: Sequence[int]) -> int:
        """Messages sent (writer w sent 0..seqs[w]-1) that never arrived."""
        return sum(
            1 for w, n in enumerate(seqs) for s in range(n) if (phase, w, s) not in self.receipts
        )


async def configure_channel(target: Target, receiver_url: str) -> None:
    """Create `bench:hook:*` with the receiver as its only webhook (or point an existing
    one at it)."""
    headers = {"Authorization": f"Bearer {target.api_key}"}
    api = target.base_url + "/api/realtime/channels"
    body = {
        "pattern": HOOK_PATTERN,
        "description": "pgrealtime bench webhooks",
        "webhookUrls": [receiver_url],
        "enabled": True,
    }
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(api, json=body) as resp:
            if resp.status in (200, 201):
                return
            if resp.status != 409:
                detail = await resp.text()
                raise RuntimeError(f"creating {HOOK_PATTERN}: HTTP {resp.status} {detail}")
        async with http.get(api) as resp:
            channels = await resp.json()
        found = next(c for c in channels if c["pattern"] == HOOK_PATTERN)
        update = {"webhookUrls": [receiver_url], "enabled": True}
        async with http.put(f"{api}/{found['id']}", json=update) as resp:
            if resp.status != 200:
                raise RuntimeError(f"updating {HOOK_PATTERN}: HTTP {resp.status}")


async def settled_statuses(url: str, within: float) -> dict[str, int]:
    """Queue rows by status once nothing is pending (or after `within` s). Every
    message may have arrived while a row is still pending: an outcome is written just
    after the response, and a request whose response was lost (the receiver stopped
    mid-request) is retried after its backoff, reaching the receiver a second time."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        statuses = await delivery_statuses(url)
        if not statuses.get("pending") or asyncio.get_running_loop().time() > deadline:
            return statuses
        await asyncio.sleep(0.2)


async def delivery_statuses(url: str) -> dict[str, int]:
    """Rows of realtime.webhook_deliveries by status (the queue, as PostgreSQL sees it)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM realtime.webhook_deliveries GROUP BY status"
        )
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


def _publisher(writers: SqlWriters, phase: int, pad: str, seqs: list[int]):
    async def send(k: int, due: int) -> None:
        w = k % writers.count
        seq = seqs[w]
        seqs[w] = seq + 1
        body = orjson.dumps({"k": phase, "w": w, "s": seq, "t": due, "x": pad}).decode()
        writers.submit(w, due, HOOK_CHANNEL, body)

    return send


async def rate_phase(target: Target, s: Sizes, receiver: HookReceiver, url: str, pad: str) -> dict:
    """Publish at `s.rates[0]` and measure how fast deliveries reach the receiver."""
    rate = s.rates[0]
    seconds = s.messages / rate if s.messages else s.warmup + s.duration
    writers = SqlWriters(url, s.publishers, PUBLISH_ROW, PUBLISH_ROWS)
    await writers.start()
    seqs = [0] * writers.count
    probe = target.probe
    probe.refresh()
    start = now_ns() + 100_000_000
    t0 = start + int(min(s.warmup, seconds / 4) * 1e9)
    t1 = start + int(seconds * 1e9)
    receiver.open_window(PHASE_RATE, t0, t1)
    window = Window(probe, lambda: receiver.phase_requests.get(PHASE_RATE, 0))
    send_stats = SendStats()
    send = _publisher(writers, PHASE_RATE, pad, seqs)
    try:
        await asyncio.gather(
            run_schedule(rate, seconds, start, send, send_stats),
            window.mark("t0", t0, lambda: writers.done),
            window.mark("t1", t1, lambda: writers.done),
        )
    finally:
        await writers.close(s.drain)
    published_ns = now_ns()
    sent = sum(writers.committed)  # stored messages: only those can have deliveries
    backlog = sent - receiver.phase_unique.get(PHASE_RATE, 0)
    await wait_until(lambda: receiver.phase_unique.get(PHASE_RATE, 0) >= sent, s.drain)
    arrived = receiver.phase_unique.get(PHASE_RATE, 0)
    result = window.figures()
    total_s = (receiver.last_unique_ns - start) / 1e9
    result.update(
        {
            "how": "pgrealtime webhook worker",
            "rate_offered": rate,
            "messages": sent,
            "delivered": arrived,
            "deliveries_per_s_overall": round(arrived / total_s, 1) if total_s > 0 else None,
            "backlog_at_last_publish": backlog,
            # the worker alone, once publishing has stopped competing for PostgreSQL
            "drain_deliveries_per_s": (
                round(backlog / ((receiver.last_unique_ns - published_ns) / 1e9), 1)
                if arrived >= sent and backlog > 0 and receiver.last_unique_ns > published_ns
                else None
            ),
            "backlog_cleared_s": (
                round((receiver.last_unique_ns - published_ns) / 1e9, 2)
                if arrived >= sent
                else None
            ),
            "latency": summarize_ns(receiver.latencies[PHASE_RATE]).as_dict(),
            "publish_commit_p99_ms": summarize_ns(writers.lag_ns).p99_ms,
            "messages_per_commit": (
                round(writers.done / writers.transactions, 1) if writers.transactions else None
            ),
            "send_lag_p99_ms": summarize_ns(send_stats.lag_ns).p99_ms,
            "not_stored": sum(seqs) - sent,
            "lost": receiver.lost(PHASE_RATE, writers.committed),
            "writer_errors": len(writers.errors),
            "writer_errors_sample": writers.errors[:5],
        }
    )
    return result


async def outage_phase(
    target: Target, s: Sizes, receiver: HookReceiver, url: str, pad: str
) -> dict:
    """Steady publishing while the receiver is down for `s.outage_seconds`, then wait
    for the queue to drain."""
    rate = s.rates[1] if len(s.rates) > 1 else s.rates[0] / 5
    edge = max(1.0, min(5.0, s.outage_seconds / 10))  # publishing before and after
    writers = SqlWriters(url, s.publishers, PUBLISH_ROW, PUBLISH_ROWS)
    await writers.start()
    seqs = [0] * writers.count
    start = now_ns() + 100_000_000
    down_at = start + int(edge * 1e9)
    up_at = down_at + int(s.outage_seconds * 1e9)
    marks: dict[str, float] = {}

    async def outage() -> None:
        await sleep_until(down_at)
        marks["received_before"] = receiver.phase_unique.get(PHASE_OUTAGE, 0)
        await receiver.stop()
        marks["down_ns"] = now_ns()
        await sleep_until(up_at)
        await receiver.start()
        marks["up_ns"] = now_ns()
        stored = sum(writers.committed)
        marks["undelivered_at_restart"] = stored - receiver.phase_unique.get(PHASE_OUTAGE, 0)

    try:
        await asyncio.gather(
            run_schedule(
                rate,
                2 * edge + s.outage_seconds,
                start,
                _publisher(writers, PHASE_OUTAGE, pad, seqs),
                SendStats(),
            ),
            outage(),
        )
    finally:
        await writers.close(s.drain)
    published_ns = now_ns()
    sent = sum(writers.committed)
    # retries back off (1 s, 2 s, 4 s ... with jitter): the last one of a delivery that
    # failed all through the outage can come up to about one outage after the restart
    await wait_until(
        lambda: receiver.phase_unique.get(PHASE_OUTAGE, 0) >= sent,
        2 * s.outage_seconds + s.drain,
    )
    arrived = receiver.phase_unique.get(PHASE_OUTAGE, 0)
    drained = arrived >= sent
    return {
        "rate": rate,
        "outage_seconds": round((marks["up_ns"] - marks["down_ns"]) / 1e9, 1),
        "messages": sent,
        "delivered": arrived,
        "undelivered_at_restart": marks["undelivered_at_restart"],
        "drain_s_after_restart": (
            round((receiver.last_unique_ns - marks["up_ns"]) / 1e9, 2) if drained else None
        ),
        "drain_s_after_last_publish": (
            round((receiver.last_unique_ns - published_ns) / 1e9, 2) if drained else None
        ),
        "not_stored": sum(seqs) - sent,
        "lost": receiver.lost(PHASE_OUTAGE, writers.committed),
        "writer_errors": len(writers.errors),
        "writer_errors_sample": writers.errors[:5],
    }


async def baseline_posts(receiver: HookReceiver, count: int, pad: str) -> dict:
    """A bare aiohttp client POSTing `count` webhook-shaped requests to the receiver,
    PER_HOST in flight, as fast as it can (closed loop)."""
    created = datetime.now(UTC)
    rtt = array("q")
    errors: list[str] = []
    next_index = iter(range(count))
    connector = aiohttp.TCPConnector(limit=PER_HOST)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for i in next_index:
                t = now_ns()
                body_json = orjson.dumps(
                    {"k": PHASE_BASELINE, "w": 0, "s": i, "t": t, "x": pad}
                ).decode()
                delivery = hook_payload.WebhookDelivery(
                    id=uuid.uuid4(),
                    url=receiver.url,
                    host="127.0.0.1",
                    attempts=1,
                    message_id=uuid.uuid4(),
                    channel_id=None,
                    channel_name=HOOK_CHANNEL,
                    event="tick",
                    payload_json=body_json,
                    sender_id=None,
                    sender_type="system",
                    created_at=created,
                )
                try:
                    async with http.post(
                        receiver.url,
                        data=hook_payload.body(delivery),
                        headers=hook_payload.headers(delivery),
                    ) as resp:
                        await resp.read()
                except aiohttp.ClientError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                rtt.append(now_ns() - t)

        t0 = now_ns()
        receiver.open_window(PHASE_BASELINE, t0, t0 + 10**15)
        await asyncio.gather(*(worker() for _ in range(PER_HOST)))
        secs = (now_ns() - t0) / 1e9
    arrived = receiver.phase_unique.get(PHASE_BASELINE, 0)
    return {
        "how": f"bare aiohttp client POST loop, {PER_HOST} in flight",
        "messages": count,
        "delivered": arrived,
        "deliveries_per_s": round(arrived / secs, 1),
        "deliveries_per_s_overall": round(arrived / secs, 1),
        "latency": summarize_ns(rtt).as_dict(),
        "lost": count - arrived,
        "errors": len(errors),
        "errors_sample": errors[:5],
    }


async def run(target: Target, s: Sizes) -> dict:
    """Throughput and outage against the server, then the bare-client baseline;
    returns {"server": ..., "baseline": ...}."""
    if not s.rates:
        raise ValueError("webhooks needs a publish rate (--rates 1500,200)")
    if not target.api_key:
        raise RuntimeError("webhooks needs the admin API key (--api-key) to configure a channel")
    url = database_url(target, s)
    pad = "x" * s.payload_bytes
    receiver = HookReceiver()
    await receiver.start()
    try:
        await configure_channel(target, receiver.url)
        quiet_gc()
        server = {"rate": await rate_phase(target, s, receiver, url, pad)}
        server["rate"]["db_statuses"] = await settled_statuses(url, s.drain + 10)
        server["outage"] = await outage_phase(target, s, receiver, url, pad)
        server["outage"]["db_statuses"] = await settled_statuses(url, s.drain + 10)
        count = server["rate"]["messages"]
        baseline = {"rate": await baseline_posts(receiver, count, pad)}
    finally:
        gc.enable()
        with contextlib.suppress(Exception):
            await receiver.stop()
    common = {
        "requests": receiver.requests,
        "duplicates": receiver.duplicates,
        "retried_requests": receiver.retried,
        "max_attempt": receiver.max_attempt,
        "bad_requests": receiver.bad,
        "bad_samples": receiver.bad_samples,
    }
    server.update(common)
    baseline.update({"bad_requests": receiver.bad, "bad_samples": receiver.bad_samples})
    return {"server": server, "baseline": baseline}


# -- report ---------------------------------------------------------------------------


def summary_rows(result: dict) -> list[tuple[str, object]]:
    """Throughput (server and baseline side by side), then the outage (server only)."""
    r = result["rate"]
    q = r["latency"]
    rows: list[tuple[str, object]] = [
        ("throughput run: how", r["how"]),
        ("  messages", r["messages"]),
        ("  publish rate offered/s", r.get("rate_offered")),
        ("  deliveries/s (measured window)", r["deliveries_per_s"]),
        ("  deliveries/s (start -> last delivery)", r["deliveries_per_s_overall"]),
        ("  latency p50 ms", q["p50_ms"]),
        ("  latency p99 ms", q["p99_ms"]),
        ("  latency max ms", q["max_ms"]),
        ("  backlog at last publish", r.get("backlog_at_last_publish")),
        ("  backlog cleared s after last publish", r.get("backlog_cleared_s")),
        ("  deliveries/s draining that backlog", r.get("drain_deliveries_per_s")),
        ("  publish commit p99 ms", r.get("publish_commit_p99_ms")),
        ("  messages per publish transaction", r.get("messages_per_commit")),
        ("  server CPU us/delivery", r.get("server_cpu_us_per_delivery")),
        ("  server CPU %", r.get("server_cpu_pct")),
        ("  postgres CPU %", r.get("postgres_cpu_pct")),
        (
            "  gen CPU % / other %",
            f"{r['loadgen_cpu_pct']} / {r['other_cpu_pct']}" if "loadgen_cpu_pct" in r else None,
        ),
        ("  scheduled but not stored (publisher behind)", r.get("not_stored")),
        ("  lost", r["lost"]),
    ]
    if "rate_offered" in r:
        ok = r["deliveries_per_s"] >= TARGET_PER_S and not r["lost"]
        rows.append((f"  target >= {TARGET_PER_S:,.0f} deliveries/s", "met" if ok else "MISSED"))
    o = result.get("outage")
    if o:
        rows += [
            ("outage run: publish rate/s", o["rate"]),
            ("  receiver down s", o["outage_seconds"]),
            ("  messages published", o["messages"]),
            ("  undelivered at restart", o["undelivered_at_restart"]),
            ("  drain s after restart", o["drain_s_after_restart"]),
            ("  drain s after last publish", o["drain_s_after_last_publish"]),
            ("  outage lost", o["lost"]),
            ("  queue rows by status", ", ".join(f"{k} {v}" for k, v in o["db_statuses"].items())),
        ]
    if "duplicates" in result:
        rows += [
            ("requests received (all runs)", result["requests"]),
            ("duplicates (same delivery id)", result["duplicates"]),
            ("retried requests", result["retried_requests"]),
            ("max attempt", result["max_attempt"]),
        ]
    rows.append(("bad requests", result["bad_requests"]))
    return rows


def correctness(result: dict) -> list[str]:
    """Loss is never acceptable; duplicates are (at least once) and only counted."""
    problems = []
    for part in ("rate", "outage"):
        r = result.get(part)
        if not r:
            continue
        if r["lost"]:
            problems.append(f"{part}: lost {r['lost']}")
        if r.get("writer_errors"):
            problems.append(f"{part}: writer errors {r['writer_errors_sample']}")
        if r.get("errors"):
            problems.append(f"{part}: client errors {r['errors_sample']}")
        statuses = r.get("db_statuses") or {}
        undelivered = {k: v for k, v in statuses.items() if k != "delivered"}
        if undelivered:
            problems.append(f"{part}: deliveries not delivered in the queue: {undelivered}")
    if result.get("bad_requests"):
        problems.append(f"bad requests {result['bad_requests']}: {result['bad_samples']}")
    return problems
