"""The database the changes and webhooks scenarios write to: its URL (`--database-url`
or the embedded cluster the server started), the `realtime.publish()` statements,
and `SqlWriters`, the writer connections that commit an open-loop schedule."""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from typing import Any

import asyncpg

from bench.harness.loadgen import now_ns
from bench.harness.sizes import Sizes
from bench.harness.targets import Target

PUBLISH_ROW = "SELECT realtime.publish($1, 'tick', $2::jsonb)"
PUBLISH_ROWS = (
    "SELECT count(realtime.publish(c, 'tick', p)) FROM unnest($1::text[], $2::jsonb[]) AS u(c, p)"
)


def database_url(target: Target, s: Sizes) -> str:
    """`--database-url`, else the embedded cluster the server started: its
    postmaster.pid names the port and the socket directory."""
    if s.database_url:
        return s.database_url
    pidfiles = list(target.workdir.rglob("postmaster.pid")) if target.workdir else []
    if not pidfiles:
        raise RuntimeError("this scenario writes to the database: give --database-url")
    lines = pidfiles[0].read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"


class SqlWriters:
    """Writer connections, each committing its own queue in order. The schedule only
    enqueues (open loop): a writer that falls behind makes rows late, and that shows as
    latency, since each row carries its scheduled time.

    `one` runs per item, one transaction each. With `many` (the same statement over
    one array per argument), a writer whose previous commit is still running commits
    everything queued meanwhile in one transaction: group commit in the application.
    Transactions that NOTIFY (`realtime.publish()`) commit one at a time database-wide,
    so one per message cannot keep up with a slow disk.

    `done_counter` (a shared multiprocessing Value) mirrors `done` for a parent process
    when the writers run in a child (`writer_process`)."""

    def __init__(
        self,
        url: str,
        count: int,
        one: str,
        many: str | None = None,
        max_group: int = 500,
        done_counter: Any = None,
    ) -> None:
        self.url = url
        self.count = max(1, count)
        self.one = one
        self.many = many
        self.max_group = max_group
        self.done_counter = done_counter
        self.conns: list[asyncpg.Connection] = []
        self.queues: list[asyncio.Queue] = []
        self.tasks: list[asyncio.Task] = []
        self.lag_ns = array("q")  # scheduled time -> committed
        self.done = 0
        self.transactions = 0
        self.committed: list[int] = []  # per writer: items 0..n-1 are committed
        self.errors: list[str] = []

    async def start(self) -> None:
        self.committed = [0] * self.count
        self.conns = [await asyncpg.connect(self.url) for _ in range(self.count)]
        self.queues = [asyncio.Queue() for _ in range(self.count)]
        self.tasks = [asyncio.create_task(self._run(w)) for w in range(self.count)]

    def submit(self, writer: int, due: int, *args: Any) -> None:
        self.queues[writer].put_nowait((due, args))

    async def _run(self, writer: int) -> None:
        conn, queue = self.conns[writer], self.queues[writer]
        last = False
        while not last:
            item = await queue.get()
            if item is None:
                return
            group = [item]
            while self.many is not None and len(group) < self.max_group and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    last = True
                    break
                group.append(item)
            try:
                if len(group) == 1:
                    await conn.execute(self.one, *group[0][1])
                else:
                    columns = [list(c) for c in zip(*(args for _, args in group), strict=True)]
                    await conn.execute(self.many, *columns)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            committed = now_ns()
            for due, _ in group:
                self.lag_ns.append(committed - due)
            self.done += len(group)
            if self.done_counter is not None:
                self.done_counter.value = self.done
            self.committed[writer] += len(group)
            self.transactions += 1

    def backlog(self) -> int:
        return sum(q.qsize() for q in self.queues)

    async def close(self, wait_s: float = 30.0) -> None:
        """Finish what is queued (up to `wait_s`), then close the connections."""
        for q in self.queues:
            q.put_nowait(None)
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=wait_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for conn in self.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
