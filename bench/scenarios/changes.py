"""`pgrealtime bench changes`: database change notifications on `db:<table>` channels.

Three measurements on one server:

1. **Latency (the server).** Subscribers on `db:bench_rows` (no row level security);
   writers commit one INSERT per transaction on an open-loop schedule. Each row holds
   the time it was *scheduled* (`sent_ns`, the generator's monotonic clock) and a
   sequence number per writer, so commit-to-delivery latency runs from the schedule,
   as in the other scenarios, and includes the commit itself. The writers run in a
   child process of their own (`writer_process`), pinned to the generator's cpu: in
   the receivers' process (100,000 frames/s) their commits were late by that event
   loop's delay, which then read as the server's latency. Both processes read the
   same clock (CLOCK_MONOTONIC).
2. **Latency (the baseline).** The same sessions, also subscribed to the plain channel
   `bench:changes`, fed at the same rate by the same writers calling
   `realtime.publish()` from SQL. That is the other way a database write reaches
   subscribers (a trigger calling `realtime.publish()`): a stored message and a NOTIFY
   instead of the WAL, decoding and routing. Same server, database, sessions and
   clock, so the difference is the change pipeline. The aiohttp broadcast baseline of
   the other scenarios cannot take part: it has no database.
3. **RLS throughput.** `db:bench_owned` has row level security with
   `USING (owner = auth.uid())` and an index on `owner`; every subscriber is a
   distinct user (its own JWT `sub`). Rows are written in batches, one per owner, as
   fast as they are delivered (at most 8 batches outstanding, the change feed's
   batches in flight, so the server may join queued batches into one RLS check as it
   does under any sustained load; earlier runs allowed 2). Each subscriber must get
   exactly its own rows: a row of another owner is a leak, counted and printed.
   `--subscribers 0` skips the latency runs and measures this one only.

Tables `public.bench_rows` and `public.bench_owned` are created for the run and
dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import re
import time
import uuid
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.harness import fastws
from bench.harness.database import PUBLISH_ROW, PUBLISH_ROWS, database_url
from bench.harness.loadgen import Recorder, Session, bounded_gather, close_all, now_ns
from bench.harness.measure import Window, quiet_gc, wait_for_arrivals, wait_until
from bench.harness.procstat import ServerProbe
from bench.harness.sizes import Sizes
from bench.harness.stats import SequenceTracker, summarize_ns
from bench.harness.targets import Target
from bench.harness.writer_process import WriterPlan, WriterProcess

ROWS_TABLE = "bench_rows"
OWNED_TABLE = "bench_owned"
SQL_CHANNEL = "bench:changes"
DB_ROWS = f"db:{ROWS_TABLE}"
DB_OWNED = f"db:{OWNED_TABLE}"
PHASE_DB, PHASE_SQL, PHASE_RLS = 0, 1, 2
P99_TARGET_MS = 50.0
RLS_TARGET_PER_S = 10_000.0
RLS_ROWS_PER_INSERT = 1000  # one transaction writes at most this many rows
RLS_BATCHES_OUTSTANDING = 8  # = the reader's batches in flight: lets the server join them

DEFAULTS = dict(
    subscribers=100,
    publishers=16,
    rates=(1000,),
    warmup=2.0,
    duration=10.0,
    drain=30.0,
    rls_subscribers=1000,
)
QUICK = dict(
    subscribers=5, publishers=2, rates=(100,), warmup=0.3, duration=1.0, rls_subscribers=20
)

SETUP_SQL = f"""
DROP TABLE IF EXISTS public.{ROWS_TABLE}, public.{OWNED_TABLE};
CREATE TABLE public.{ROWS_TABLE} (
  id bigserial PRIMARY KEY, writer int NOT NULL, seq bigint NOT NULL,
  sent_ns bigint NOT NULL, pad text NOT NULL DEFAULT '');
GRANT SELECT ON public.{ROWS_TABLE} TO authenticated;
CREATE TABLE public.{OWNED_TABLE} (
  id bigserial PRIMARY KEY, owner uuid NOT NULL, seq bigint NOT NULL, sent_ns bigint NOT NULL);
ALTER TABLE public.{OWNED_TABLE} ENABLE ROW LEVEL SECURITY;
CREATE POLICY bench_owner ON public.{OWNED_TABLE} FOR SELECT TO authenticated
  USING (owner = auth.uid());
-- what an application with such a policy has: the policy's column indexed, so each
-- user's check reads that user's rows only
CREATE INDEX ON public.{OWNED_TABLE} (owner);
GRANT SELECT ON public.{OWNED_TABLE} TO authenticated;
"""
DROP_SQL = f"DROP TABLE IF EXISTS public.{ROWS_TABLE}, public.{OWNED_TABLE}"
INSERT_ROW = f"INSERT INTO public.{ROWS_TABLE} (writer, seq, sent_ns, pad) VALUES ($1, $2, $3, $4)"
INSERT_OWNED = (
    f"INSERT INTO public.{OWNED_TABLE} (owner, seq, sent_ns) "
    "SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[])"
)


def subscribe_frame(table: str) -> dict:
    """The subscribe frame of a `db:` channel, with the filter spelled out."""
    return {
        "type": "subscribe",
        "channel": f"db:{table}",
        "filter": {"event": "*", "schema": "public"},
    }


LATENCY_SUBSCRIBES = [subscribe_frame(ROWS_TABLE), {"type": "subscribe", "channel": SQL_CHANNEL}]


# -- the database ---------------------------------------------------------------------


async def feed_status(target: Target) -> dict:
    """The `changes` part of /health's details ({} when there is none); the details
    are only for an admin credential."""
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(target.base_url + "/health", headers=headers) as resp,
    ):
        body = await resp.json(content_type=None)
    return (body.get("details") or {}).get("changes") or {}


# -- receiving ------------------------------------------------------------------------


class Sink:
    """One phase's tally: its own sequence tracker (so a phase's report is not
    polluted by another's streams), deliveries, and the latency of rows scheduled
    inside the measured window: from the schedule (every delivery), and from the
    database's own timestamp of the row (sampled subscribers, see `db_latency`)."""

    __slots__ = ("_stamps", "count", "db_lat", "lat", "t0", "t1", "tracker")

    def __init__(self) -> None:
        self.tracker = SequenceTracker()
        self.count = 0
        self.t0 = self.t1 = 0
        self.lat = array("q")
        self.db_lat = array("q")
        self._stamps: dict[bytes, int] = {}  # each row's stamp is parsed once

    def open(self, t0: int, t1: int) -> None:
        self.t0, self.t1 = t0, t1
        self.lat = array("q")
        self.db_lat = array("q")

    def db_latency(self, sched: int, stamp: bytes) -> None:
        """Wall clock now minus the row's timestamp from PostgreSQL (the change's
        `commit_timestamp`, or the message's `timestamp`): delivery after the
        database, without the writers' queueing. Same host, same clock."""
        if self.t0 <= sched < self.t1:
            at = self._stamps.get(stamp)
            if at is None:
                if len(self._stamps) > 4096:
                    self._stamps.clear()
                try:
                    parsed = datetime.fromisoformat(stamp.decode())
                except ValueError:
                    return
                at = self._stamps[stamp] = int(parsed.timestamp() * 1e6) * 1000
            self.db_lat.append(time.time_ns() - at)

    def add(self, stream: Any, seq: int, sched: int, received: int) -> None:
        self.tracker.observe(stream, seq)
        self.count += 1
        if self.t0 <= sched < self.t1:
            self.lat.append(received - sched)


@dataclass
class ChangeRecorder(Recorder):
    """What the receivers saw: a Sink per phase, leaks, bad payloads."""

    sinks: dict[int, Sink] = field(
        default_factory=lambda: {p: Sink() for p in (PHASE_DB, PHASE_SQL, PHASE_RLS)}
    )
    leaks: int = 0
    leak_samples: list[dict] = field(default_factory=list)
    bad_payloads: int = 0
    bad_samples: list[Any] = field(default_factory=list)

    def open_window(self, step: int, t0: int, t1: int) -> None:
        self.sinks[step].open(t0, t1)

    def phase_tracker(self, phase: int) -> SequenceTracker:
        return self.sinks[phase].tracker

    def bad(self, sample: Any) -> None:
        self.bad_payloads += 1
        if len(self.bad_samples) < 5:
            self.bad_samples.append(sample)

    def leak(self, subscriber: str | None, row_owner: str, row_id: Any) -> None:
        self.leaks += 1
        if len(self.leak_samples) < 10:
            self.leak_samples.append(
                {"subscriber": subscriber, "row_owner": row_owner, "row_id": row_id}
            )

    def observe(self, session: ChangeSession, received: int, frame: dict) -> None:
        """A fully parsed `message` frame (one the fast path did not take): check its
        envelope, then count it."""
        channel = frame.get("channel")
        payload = frame.get("payload")
        try:
            if channel == SQL_CHANNEL:
                stream = (session.index, payload["w"])
                self.sinks[PHASE_SQL].add(stream, payload["s"], payload["t"], received)
                return
            ok = channel in (DB_ROWS, DB_OWNED) and (
                frame.get("event") == "INSERT"
                and payload["eventType"] == "INSERT"
                and payload["schema"] == "public"
                and payload["table"] == channel[3:]
                and payload["old"] is None
                and isinstance(payload["commit_timestamp"], str)
            )
            if not ok:
                self.bad(frame)
                return
            row = payload["new"]
            if channel == DB_ROWS:
                stream = (session.index, row["writer"])
                self.sinks[PHASE_DB].add(stream, row["seq"], row["sent_ns"], received)
            elif row["owner"] != session.owner:
                self.leak(session.owner, row["owner"], row.get("id"))
            else:
                self.sinks[PHASE_RLS].add(session.index, row["seq"], row["sent_ns"], received)
        except (KeyError, TypeError):
            self.bad(frame)


def _row_frame(table: str, columns: str) -> re.Pattern[bytes]:
    """A whole change frame as the server writes it (compact JSON, fixed key order),
    with the new row's `columns` (a regex with groups)."""
    head = (
        f'{{"type":"message","channel":"db:{table}","event":"INSERT","payload":'
        f'{{"schema":"public","table":"{table}","commit_timestamp":"'
    )
    tail = '","eventType":"INSERT","new":{' + columns + '},"old":null}}'
    return re.compile(re.escape(head).encode() + rb'[^"]+' + tail.encode())


# Fast paths: the generator must take 100,000 frames/s on one core, so each frame is
# checked and its numbers cut out by one regex match in C, without building dicts.
# A frame they do not match (another layout, a wrong table or event) is parsed whole.
ROWS_MATCH = _row_frame(
    ROWS_TABLE, r'"id":\d+,"writer":(\d+),"seq":(\d+),"sent_ns":(\d+),"pad":"[^"]*"'
).fullmatch
COMMIT_STAMP = re.compile(rb'"commit_timestamp":"([^"]+)"').search
MESSAGE_STAMP = re.compile(rb'"timestamp":"([^"]+)"').search
DB_CLOCK_SAMPLE = 10  # subscribers (by index) that also measure from the database's clock
OWNED_MATCH = _row_frame(
    OWNED_TABLE, r'"id":(\d+),"owner":"([0-9a-f-]{36})","seq":(\d+),"sent_ns":(\d+)'
).fullmatch
SQL_MATCH = re.compile(
    rb'\{"type":"message","messageId":"[^"]+","channel":"'
    + re.escape(SQL_CHANNEL).encode()
    + rb'","event":"tick","payload":\{"s": (\d+), "t": (\d+), "w": (\d+)\}'
).match


class ChangeSession(Session):
    """A session whose `message` frames are change notifications (or the baseline's
    messages), checked and counted here; every other frame (replies, errors) goes the
    usual way."""

    __slots__ = ("owner", "owner_bytes", "sample", "sinks")

    def __init__(self, index: int, recorder: ChangeRecorder, owner: str | None = None) -> None:
        super().__init__(index, recorder)
        self.owner = owner
        self.owner_bytes = owner.encode() if owner else b""
        self.sinks = recorder.sinks
        self.sample = index < DB_CLOCK_SAMPLE

    def on_text(self, data: bytes | str) -> None:
        received = now_ns()
        if type(data) is bytes:
            m = ROWS_MATCH(data)
            if m is not None:
                w, s, t = m.groups()
                self.sinks[PHASE_DB].add((self.index, int(w)), int(s), int(t), received)
                if self.sample and (stamp := COMMIT_STAMP(data)) is not None:
                    self.sinks[PHASE_DB].db_latency(int(t), stamp.group(1))
                return
            m = OWNED_MATCH(data)
            if m is not None:
                row_id, owner, s, t = m.groups()
                if owner == self.owner_bytes:
                    self.sinks[PHASE_RLS].add(self.index, int(s), int(t), received)
                else:
                    self.recorder.leak(self.owner, owner.decode(), int(row_id))  # type: ignore[attr-defined]
                return
            m = SQL_MATCH(data)
            if m is not None:
                s, t, w = m.groups()
                self.sinks[PHASE_SQL].add((self.index, int(w)), int(s), int(t), received)
                if self.sample and (stamp := MESSAGE_STAMP(data, m.end())) is not None:
                    self.sinks[PHASE_SQL].db_latency(int(t), stamp.group(1))
                return
            if data.startswith(b'{"type":"message"'):
                try:
                    frame = orjson.loads(data)
                except orjson.JSONDecodeError:
                    self.recorder.malformed += 1
                    return
                self.recorder.observe(self, received, frame)  # type: ignore[attr-defined]
                return
        super().on_text(data)


async def open_change_session(
    url: str,
    index: int,
    rec: ChangeRecorder,
    token: str,
    subscribes: Sequence[dict],
    owner: str | None = None,
) -> ChangeSession:
    """connect (lean client) + auth + the given subscribe frames, pipelined."""
    session = ChangeSession(index, rec, owner)
    session.conn = await fastws.connect(url, session.on_text, session.on_close)
    try:
        await session.auth(token)
        await asyncio.gather(*(session.request(dict(f), "subscribed") for f in subscribes))
    except BaseException:
        await session.close()
        raise
    return session


# -- measuring ------------------------------------------------------------------------


async def latency_phase(
    phase: int,
    s: Sizes,
    rec: ChangeRecorder,
    probe: ServerProbe,
    url: str,
    sessions: Sequence[ChangeSession],
) -> dict:
    """One open-loop run at `s.rates[0]` rows/s: INSERTs into bench_rows (PHASE_DB) or
    realtime.publish() calls (PHASE_SQL), spread over the writers round robin.

    The writers run in a child process pinned to the generator's cpus
    (`writer_process`); this process decides the schedule and receives."""
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    plan = WriterPlan(
        url=url,
        writers=max(1, s.publishers),
        # PHASE_DB: one INSERT per transaction; PHASE_SQL: realtime.publish(), grouped
        one=INSERT_ROW if phase == PHASE_DB else PUBLISH_ROW,
        many=None if phase == PHASE_DB else PUBLISH_ROWS,
        channel=None if phase == PHASE_DB else SQL_CHANNEL,
        rate=s.rates[0],
        seconds=s.warmup + s.duration,
        drain=s.drain,
        payload_bytes=s.payload_bytes,
        cpus=cpus,
    )
    writers = WriterProcess(plan)
    try:
        await writers.start()
        probe.refresh()  # after the writers connected: their backends are PostgreSQL's
        start = now_ns() + 100_000_000
        t0 = start + int(s.warmup * 1e9)
        t1 = t0 + int(s.duration * 1e9)  # = the end of the schedule
        rec.open_window(phase, t0, t1)
        window = Window(probe, lambda: rec.sinks[phase].count, helper_pid=writers.pid)
        writers.go(start)
        await asyncio.gather(
            window.mark("t0", t0, lambda: writers.done),
            window.mark("t1", t1, lambda: writers.done),
        )
        report = await writers.report()
    finally:
        await writers.stop()
    # what was committed counts (writers commit in order): a row the writers could
    # not commit before the end is not the server's to deliver
    committed = report.committed
    rows = sum(committed)
    expected_total = rows * len(sessions)
    tracker = rec.phase_tracker(phase)
    await wait_for_arrivals(lambda: tracker.unique, expected_total, s.drain)
    expected = {(x.index, w): n for x in sessions for w, n in enumerate(committed) if n}
    result = window.figures()
    result.update(
        {
            "path": DB_ROWS + " (WAL)" if phase == PHASE_DB else SQL_CHANNEL + " (SQL publish)",
            "subscribers": len(sessions),
            "writers": plan.writers,
            "writers_process": f"separate process, cpu {list(cpus)}",
            "rows_per_commit": round(report.done / report.transactions, 2)
            if report.transactions
            else None,
            "rate_offered": plan.rate,
            "rows": rows,
            "rows_not_committed": sum(report.seqs) - rows,
            "latency": summarize_ns(rec.sinks[phase].lat).as_dict(),
            "latency_from_db_clock": summarize_ns(rec.sinks[phase].db_lat).as_dict(),
            "commit_lag": summarize_ns(report.lag_ns).as_dict(),
            "send_lag_p99_ms": summarize_ns(report.send_lag_ns).p99_ms,
            "sequence": tracker.report(expected).as_dict(),
            "missing_after_drain": expected_total - tracker.unique,
            "writer_errors": len(report.errors),
            "writer_errors_sample": report.errors[:5],
        }
    )
    return result


async def rls_phase(
    target: Target, s: Sizes, rec: ChangeRecorder, probe: ServerProbe, url: str
) -> dict:
    """Distinct users on the RLS table; batches of rows spread over all owners, written
    as fast as they are delivered (closed loop, RLS_BATCHES_OUTSTANDING at most).

    The measured window starts once the first batch has arrived (and the warm-up has
    passed), lasts `s.duration` while writing goes on, and ends when everything written
    has arrived: a server that takes longer than the window per batch is still
    measured over whole batches."""
    n = s.rls_subscribers
    owners = [str(uuid.uuid4()) for _ in range(n)]
    first = 10_000  # session indexes apart from the latency phase's
    t_setup = now_ns()
    sessions: list[ChangeSession] = await bounded_gather(
        [
            (
                lambda i=i: open_change_session(
                    target.ws_url,
                    first + i,
                    rec,
                    target.token(owners[i]),
                    [subscribe_frame(OWNED_TABLE)],
                    owners[i],
                )
            )
            for i in range(n)
        ],
        s.concurrency,
    )
    setup_s = (now_ns() - t_setup) / 1e9
    tracker = rec.phase_tracker(PHASE_RLS)
    per_owner = [0] * n
    batch = min(n, RLS_ROWS_PER_INSERT)
    state = {"written": 0, "inserts": 0, "stop": False}
    insert_ns = array("q")

    def arrived() -> int:
        return tracker.unique + rec.leaks

    async def write_loop(conn: asyncpg.Connection) -> None:
        order = list(range(n))
        shuffle = random.Random(7).shuffle
        pos = n  # position in `order`; reshuffled after each pass over the owners
        while not state["stop"]:
            if state["written"] - arrived() >= RLS_BATCHES_OUTSTANDING * batch:
                await asyncio.sleep(0.002)
                continue
            chosen = []
            for _ in range(batch):
                if pos >= n:
                    shuffle(order)
                    pos = 0
                chosen.append(order[pos])
                pos += 1
            seqs = []
            for i in chosen:
                seqs.append(per_owner[i])
                per_owner[i] += 1
            sent = now_ns()
            await conn.execute(INSERT_OWNED, [owners[i] for i in chosen], seqs, [sent] * batch)
            insert_ns.append(now_ns() - sent)
            state["written"] += batch
            state["inserts"] += 1

    status0 = await feed_status(target)
    conn = await asyncpg.connect(url)
    probe.refresh()
    start = now_ns()
    rec.open_window(PHASE_RLS, start, start + 10**15)
    window = Window(probe, lambda: rec.sinks[PHASE_RLS].count)
    writer = asyncio.create_task(write_loop(conn))
    try:
        # warm-up: the first batch through (a slow server may need far longer than
        # the warm-up for it; bounded all the same)
        await wait_until(
            lambda: (arrived() >= batch and now_ns() >= start + s.warmup * 1e9) or writer.done(),
            s.warmup + s.drain + 300,
        )
        await window.mark("t0", now_ns(), lambda: state["written"])
        await asyncio.sleep(s.duration)
        state["stop"] = True
        await writer
        # whatever is outstanding (a few batches), at the rate seen so far
        w0, _, d0, _, _ = window.marks["t0"]
        seen = rec.sinks[PHASE_RLS].count - d0
        rate = seen / max((now_ns() - w0) / 1e9, 1e-3)
        outstanding = state["written"] - arrived()
        bound = s.drain + min(600.0, 2 * outstanding / rate if rate > 0 else 600.0)
        await wait_for_arrivals(arrived, state["written"], bound)
        await window.mark("t1", now_ns(), lambda: state["written"])
    finally:
        state["stop"] = True
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        await conn.close()
    status1 = await feed_status(target)
    written = state["written"]
    expected = {x.index: per_owner[i] for i, x in enumerate(sessions) if per_owner[i]}
    result = window.figures()
    batches = status1.get("delivered_batches", 0) - status0.get("delivered_batches", 0)
    changes = status1.get("delivered_changes", 0) - status0.get("delivered_changes", 0)
    result.update(
        {
            "subscribers": n,
            "setup_seconds": round(setup_s, 2),
            "rows": written,
            "rows_per_insert": batch,
            "inserts": state["inserts"],
            "insert_ms_p50": summarize_ns(insert_ns).p50_ms,
            "latency": summarize_ns(rec.sinks[PHASE_RLS].lat).as_dict(),
            "changes_per_feed_batch": round(changes / batches, 1) if batches else None,
            "sequence": tracker.report(expected).as_dict(),
            "missing_after_drain": written - tracker.unique,
            "leaks": rec.leaks,
            "leak_samples": rec.leak_samples,
        }
    )
    await close_all(sessions)
    return result


async def run(target: Target, s: Sizes) -> dict:
    """All three measurements; returns {"server": ..., "baseline": ...}."""
    if not s.rates:
        raise ValueError("changes needs a rate (--rates 1000)")
    url = database_url(target, s)
    status = await feed_status(target)
    if not status.get("enabled"):
        raise RuntimeError(f"change notifications are off: {status.get('reason')}")
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(SETUP_SQL)
    finally:
        await admin.close()
    rec = ChangeRecorder()
    probe = target.probe
    sessions: list[ChangeSession] = []
    server: dict = {}
    baseline: dict = {}
    try:
        t_setup = now_ns()
        sessions = await bounded_gather(
            [
                (
                    lambda i=i: open_change_session(
                        target.ws_url,
                        i,
                        rec,
                        target.token(),
                        LATENCY_SUBSCRIBES,
                    )
                )
                for i in range(s.subscribers)
            ],
            s.concurrency,
        )
        setup_s = (now_ns() - t_setup) / 1e9
        quiet_gc()
        if s.subscribers > 0:  # --subscribers 0 skips the latency runs (RLS run only)
            server["latency"] = await latency_phase(PHASE_DB, s, rec, probe, url, sessions)
            server["latency"]["setup_seconds"] = round(setup_s, 2)
            baseline["latency"] = await latency_phase(PHASE_SQL, s, rec, probe, url, sessions)
        await close_all(sessions)
        dropped_before = rec.dropped
        sessions = []
        gc.enable()
        quiet_gc()
        if s.rls_subscribers > 0:  # --rls-subscribers 0 skips the RLS run
            server["rls"] = await rls_phase(target, s, rec, probe, url)
            server["rls"]["sessions_dropped"] = rec.dropped - dropped_before
    finally:
        gc.enable()
        await close_all(sessions)
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(url)
            try:
                await admin.execute(DROP_SQL)
            finally:
                await admin.close()
    common = {
        "sessions_dropped": rec.dropped,
        "malformed": rec.malformed,
        "bad_payloads": rec.bad_payloads,
        "bad_samples": rec.bad_samples,
        "errors_sample": rec.errors[:5],
    }
    server.update(common)
    baseline.update(common)
    return {"server": server, "baseline": baseline}


# -- report ---------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary_rows(result: dict) -> list[tuple[str, object]]:
    """Headline figures: the latency run (server: db: channel; baseline: SQL publish on a
    plain channel), then the RLS run (server only)."""
    rows: list[tuple[str, object]] = []
    lat = result.get("latency")
    if lat:
        q, seq = lat["latency"], lat["sequence"]
        rows += [
            ("latency run: path", lat["path"]),
            ("  subscribers / writers", f"{lat['subscribers']} / {lat['writers']}"),
            ("  writers ran in", lat.get("writers_process", "the generator's process")),
            ("  rows/s offered", lat["rate_offered"]),
            ("  rows committed/s", lat["committed_per_s"]),
            ("  rows per transaction", lat["rows_per_commit"]),
            ("  deliveries/s", lat["deliveries_per_s"]),
            ("  latency p50 ms", q["p50_ms"]),
            ("  latency p90 ms", q["p90_ms"]),
            ("  latency p99 ms", q["p99_ms"]),
            ("  latency max ms", q["max_ms"]),
            ("  commit p99 ms (schedule -> committed)", lat["commit_lag"]["p99_ms"]),
            ("  writers' send lag p99 ms (schedule -> queued)", lat.get("send_lag_p99_ms")),
            ("  from DB timestamp p50 ms (sampled)", lat["latency_from_db_clock"]["p50_ms"]),
            ("  from DB timestamp p99 ms (sampled)", lat["latency_from_db_clock"]["p99_ms"]),
            ("  server CPU us/delivery", lat["server_cpu_us_per_delivery"]),
            ("  server CPU %", lat["server_cpu_pct"]),
            ("  postgres CPU %", lat["postgres_cpu_pct"]),
            ("  gen CPU % / other %", f"{lat['loadgen_cpu_pct']} / {lat['other_cpu_pct']}"),
            ("  writers process CPU %", lat.get("writers_cpu_pct")),
            ("  rows scheduled but not committed", lat.get("rows_not_committed")),
            ("  deliveries expected", seq["expected"]),
            ("  lost", seq["lost"]),
            ("  duplicated", seq["duplicated"]),
            ("  out of order", seq["reordered"]),
            ("  unexpected", seq["unexpected"]),
        ]
        if "db:" in lat["path"]:
            at_size = lat["rate_offered"] >= 1000 and lat["subscribers"] >= 100
            verdict = _verdict(_latency_ok(lat)) if at_size else "n/a (smaller than the target's)"
            rows.append((f"  target p99 <= {P99_TARGET_MS:g} ms at 1,000/s", verdict))
    rls = result.get("rls")
    if rls:
        seq = rls["sequence"]
        rows += [
            ("RLS run: subscribers (distinct users)", rls["subscribers"]),
            ("  rows written (rows per INSERT)", f"{rls['rows']:,} ({rls['rows_per_insert']})"),
            ("  RLS-checked deliveries/s", rls["deliveries_per_s"]),
            ("  changes per feed batch", rls["changes_per_feed_batch"]),
            (
                "  latency p50 / p99 ms (from INSERT)",
                f"{rls['latency']['p50_ms']:.1f} / {rls['latency']['p99_ms']:.1f}",
            ),
            ("  RLS server CPU %", rls["server_cpu_pct"]),
            ("  RLS postgres CPU %", rls["postgres_cpu_pct"]),
            ("  RLS server CPU us/delivery", rls["server_cpu_us_per_delivery"]),
            ("  RLS gen CPU % / other %", f"{rls['loadgen_cpu_pct']} / {rls['other_cpu_pct']}"),
            ("  RLS deliveries expected", seq["expected"]),
            ("  RLS lost", seq["lost"]),
            ("  RLS duplicated", seq["duplicated"]),
            ("  RLS out of order", seq["reordered"]),
            ("  leaks (rows of another owner)", rls["leaks"]),
            (
                f"  target >= {RLS_TARGET_PER_S:,.0f} deliveries/s, zero loss",
                _verdict(_rls_ok(rls)) if rls["subscribers"] >= 1000 else "n/a",
            ),
        ]
    rows += [
        ("sessions dropped", result.get("sessions_dropped")),
        ("bad payloads", result.get("bad_payloads")),
    ]
    return rows


def _latency_ok(lat: dict) -> bool:
    return (
        lat["latency"]["p99_ms"] <= P99_TARGET_MS
        and lat["rate_offered"] >= 1000
        and not lat["missing_after_drain"]
    )


def _rls_ok(rls: dict) -> bool:
    return (
        rls["deliveries_per_s"] >= RLS_TARGET_PER_S
        and not rls["missing_after_drain"]
        and not rls["sequence"]["lost"]
        and not rls["leaks"]
    )


def correctness(result: dict) -> list[str]:
    """Loss, duplicates, reordering, leaks across users, malformed or wrong payloads."""
    problems = []
    for part in ("latency", "rls"):
        r = result.get(part)
        if not r:
            continue
        for key in ("lost", "duplicated", "reordered", "unexpected"):
            if r["sequence"][key]:
                problems.append(f"{part}: {key} {r['sequence'][key]}")
        if r.get("writer_errors"):
            problems.append(f"{part}: writer errors {r['writer_errors_sample']}")
        if r.get("leaks"):
            problems.append(f"{part}: LEAKS {r['leaks']}: {r['leak_samples']}")
    for key in ("sessions_dropped", "malformed", "bad_payloads"):
        if result.get(key):
            problems.append(f"{key} {result[key]}")
    return problems
