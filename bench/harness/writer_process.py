"""The writers of `bench changes`' latency run, in a child process of their own.

Why: the generator's process also takes every delivery (100 subscribers x 1,000
rows/s is 100,000 frames/s on one core). Writers inside it commit late by that
event loop's delay, and the measured latency was mostly that delay, not the
server's. Here they have an event loop with nothing else on it, pinned to the
generator's cpu (the server keeps its cpus to itself): the kernel shares the cpu
between the two processes, the receivers' callbacks no longer hold up the commits.

The clock: `now_ns` is time.perf_counter_ns, on Linux clock_gettime(CLOCK_MONOTONIC):
one clock for every process on the host (per time namespace, which a child inherits),
so a row's scheduled time taken here and its receive time taken in the parent are
comparable, exactly as within one process. `_check_clock` refuses any other clock.

Protocol, over one Pipe: the child opens its connections and sends "ready"; the
parent decides when the schedule starts and sends that time; the child runs the
schedule, commits what is queued (within the drain) and sends a `WriterReport`,
or an error string. Rows committed so far are in a shared counter, which the parent
reads at the ends of the measured window. The child exits when the parent dies (the
parent's sentinel) and after a hard deadline in any case; the parent kills it on an
error or a timeout of its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from bench.harness.database import SqlWriters
from bench.harness.loadgen import SendStats, now_ns, run_schedule

READY_WAIT_S = 60.0  # connecting, and the parent's start time: each bounded by this
CLOSE_S_PER_WRITER = 5.0  # SqlWriters.close closes each connection within this


@dataclass(frozen=True)
class WriterPlan:
    """What the child does: all decided by the parent, except the start time."""

    url: str
    writers: int
    one: str  # the statement per row: an INSERT of (writer, seq, sent_ns, pad), or a publish
    many: str | None  # the same statement over arrays (group commit); None: one per transaction
    channel: str | None  # None: rows for the INSERT; else realtime.publish() on this channel
    rate: float  # rows/s, round robin over the writers
    seconds: float  # length of the schedule: warm-up + measured window
    drain: float  # time allowed to commit what is still queued at the end
    payload_bytes: int
    cpus: tuple[int, ...]  # the generator's cpus: the child pins itself there

    def report_wait_s(self) -> float:
        """From the start time to the report, at most (the parent's timeout)."""
        return self.seconds + self.drain + CLOSE_S_PER_WRITER * self.writers + 30.0


@dataclass
class WriterReport:
    """What the writers did, sent back at the end."""

    seqs: list[int]  # rows scheduled, per writer (their sequence numbers are 0..n-1)
    committed: list[int]  # rows committed, per writer, in order
    done: int
    transactions: int
    lag_ns: array  # every row: scheduled -> committed
    errors: list[str]
    send_lag_ns: array  # every row: scheduled -> handed to its writer (the child's own lag)


def _check_clock() -> None:
    info = time.get_clock_info("perf_counter")
    if now_ns is not time.perf_counter_ns or "CLOCK_MONOTONIC" not in info.implementation:
        raise RuntimeError(f"writers in another process need CLOCK_MONOTONIC, not {info}")


class WriterProcess:
    """The parent's side: start, `go(start_ns)`, `done` during the run, `report()`,
    then always `stop()`."""

    def __init__(self, plan: WriterPlan) -> None:
        _check_clock()
        ctx = multiprocessing.get_context("spawn")  # no fork of a process full of sockets
        self.plan = plan
        self._done = ctx.Value("q", 0, lock=False)  # one writer (the child), one reader
        self._conn, self._child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=child_main,
            args=(plan, self._done, self._child_conn),
            name="bench-writers",
            daemon=True,  # killed at the parent's exit too
        )
        self._reported = False

    @property
    def done(self) -> int:
        """Rows committed so far."""
        return self._done.value

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    async def start(self) -> None:
        """Spawn the child and wait until its connections are open."""
        self.proc.start()
        self._child_conn.close()  # ours: so the child's exit reads as end of file
        reply = await self._recv(READY_WAIT_S + 30.0)
        if reply != "ready":
            raise RuntimeError(f"writer process: {reply}")

    def go(self, start_ns: int) -> None:
        self._conn.send(start_ns)

    async def report(self) -> WriterReport:
        """The child's report, once it has run the schedule and drained."""
        reply = await self._recv(self.plan.report_wait_s())
        if not isinstance(reply, WriterReport):
            raise RuntimeError(f"writer process: {reply}")
        self._reported = True
        return reply

    async def _recv(self, wait_s: float) -> Any:
        # polled, so the receivers keep running meanwhile
        deadline = now_ns() + int(wait_s * 1e9)
        while not self._conn.poll() and now_ns() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if not self._conn.poll():
            raise TimeoutError(f"writer process: no reply within {wait_s:g} s")
        try:
            return self._conn.recv()
        except EOFError:
            raise RuntimeError(f"writer process exited ({self.proc.exitcode})") from None

    async def stop(self) -> None:
        """Let a child that has reported exit (a moment), kill any other."""
        grace = now_ns() + (int(5e9) if self._reported else 0)
        if self.proc.pid is not None:
            while self.proc.is_alive() and now_ns() < grace:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)  # at once: it has exited or been killed
        self._conn.close()


# -- the child ------------------------------------------------------------------------


def child_main(plan: WriterPlan, done: Any, conn: Any) -> None:
    """The child process: pin, run `_run` on an event loop of its own, within a hard
    deadline; any failure goes back to the parent as a string."""
    os.sched_setaffinity(0, plan.cpus)
    try:
        import uvloop  # the generator's loop too

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    deadline = 2 * READY_WAIT_S + plan.report_wait_s()
    try:
        run(asyncio.wait_for(_run(plan, done, conn), deadline))
    except BaseException as exc:
        try:
            conn.send(f"{type(exc).__name__}: {exc}")
        finally:
            os._exit(1)


async def _run(plan: WriterPlan, done: Any, conn: Any) -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:  # readable once the parent is gone: nobody to report to
        asyncio.get_running_loop().add_reader(parent.sentinel, os._exit, 2)
    writers = SqlWriters(plan.url, plan.writers, plan.one, plan.many, done_counter=done)
    await writers.start()
    conn.send("ready")
    # blocking is fine: nothing else runs yet, and the parent's exit ends the wait too
    if not conn.poll(READY_WAIT_S):
        raise TimeoutError("no start time from the parent")
    start_ns: int = conn.recv()
    seqs = [0] * writers.count
    pad = "x" * plan.payload_bytes
    stats = SendStats()

    async def send(k: int, due: int) -> None:
        # each row carries its scheduled time and its writer's sequence number
        w = k % writers.count
        seq = seqs[w]
        seqs[w] = seq + 1
        if plan.channel is None:
            writers.submit(w, due, w, seq, due, pad)
        else:
            writers.submit(
                w, due, plan.channel, orjson.dumps({"w": w, "s": seq, "t": due}).decode()
            )

    try:
        await run_schedule(plan.rate, plan.seconds, start_ns, send, stats)
    finally:
        await writers.close(plan.drain)
    conn.send(
        WriterReport(
            seqs=seqs,
            committed=writers.committed,
            done=writers.done,
            transactions=writers.transactions,
            lag_ns=writers.lag_ns,
            errors=writers.errors,
            send_lag_ns=stats.lag_ns,
        )
    )
