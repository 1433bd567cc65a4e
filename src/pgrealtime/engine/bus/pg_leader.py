"""Membership and leadership over PostgreSQL: which server processes share this
database, and which one does a job meant to run once in the cluster (reading the
replication slot).

Each process keeps one connection named `pgrealtime member <machine>:<pid>:<origin>`
(`application_name`), so the cluster's members are the live sessions of that name:
PostgreSQL ends the session of a process that dies (kill -9 closes its socket), with
no heartbeat table to expire. Leadership is a session-level advisory lock taken on that
connection with `pg_try_advisory_lock`: held exactly while the session lives, released
by PostgreSQL when it ends. The others try again every `poll_seconds` (no growing
backoff), so a dead leader is replaced within about that time.

A leader whose connection is lost steps down at once (`on_deposed`) before trying
again: it cannot know whether another process took the lock meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import asyncpg

from pgrealtime.db.dedicated import close_quietly

log = logging.getLogger(__name__)

# First key of the two-key advisory lock ('pgrt'); the second is hashtext(job name).
# Migrations use the one-key form (db/migrate.py), a separate key space.
LOCK_CLASS = 0x70677274
APP_PREFIX = "pgrealtime member "
POLL_SECONDS = 1.0
# A machine that vanishes (power, network) does not close its sockets: PostgreSQL
# probes the lock's connection after 2 s of silence and ends it (releasing the lock)
# after 2 unanswered probes 1 s apart. Ignored over a Unix socket, where a dead
# process's socket is closed by its kernel at once.
KEEPALIVES = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1",
              "tcp_keepalives_count": "2"}  # fmt: skip

# One row per process (a process may hold one such connection per elected job).
MEMBERS_SQL = (
    "SELECT a.application_name AS name, min(a.backend_start) AS backend_start,"
    " bool_or(EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
    "   AND l.locktype = 'advisory'"
    "   AND l.classid::bigint = ($1::int::bigint & 4294967295)"
    "   AND l.objid::bigint = (hashtext($2)::bigint & 4294967295) AND l.granted)) AS leader"
    " FROM pg_stat_activity a"
    " WHERE a.datname = current_database() AND a.application_name LIKE $3"
    " GROUP BY a.application_name ORDER BY 2"
)


def member_name(origin: str) -> str:
    """`pgrealtime member <machine>:<pid>:<origin[:8]>` (PostgreSQL keeps 63 bytes)."""
    machine = socket.gethostname()[:32]
    return f"{APP_PREFIX}{machine}:{os.getpid()}:{origin[:8]}"


class PgLeadership:
    """Elects one process per `job` among those connected to the same database.

    `on_elected` runs when this process takes the lock (if it raises, the lock is
    released and taken again later); `on_deposed` when it loses it (connection lost,
    or stop). `is_leader` says which it is now.
    """

    def __init__(
        self,
        url: str,
        origin: str,
        job: str,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.url = url
        self.name = member_name(origin)
        self.job = job
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.poll_seconds = poll_seconds
        self.is_leader = False
        self.connected = asyncio.Event()
        self.elections = 0  # times this process became the leader
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_try = asyncio.Event()
        self._members: list[dict[str, object]] = []

    async def start(self) -> None:
        """Start; returns after the first attempt (a lone process leads from the start)."""
        self._task = asyncio.create_task(self._run(), name=f"leadership:{self.job}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_try.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def describe(self) -> dict[str, object]:
        """For /health: this process, its machine, the members seen at the last poll
        (name = machine:pid:origin) and which of them leads."""
        members = self._members
        return {
            "process": self.name[len(APP_PREFIX) :],
            "machine": socket.gethostname(),
            "role": "leader" if self.is_leader else "standby",
            "leader": next((m["name"] for m in members if m["leader"]), None),
            "members": members,
        }

    async def _read_members(self, conn: asyncpg.Connection) -> list[dict[str, object]]:
        rows = await conn.fetch(MEMBERS_SQL, LOCK_CLASS, self.job, APP_PREFIX + "%", timeout=5)
        return [
            {
                "name": row["name"][len(APP_PREFIX) :],
                "since": row["backend_start"].isoformat(),
                "leader": row["leader"],
            }
            for row in rows
        ]

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(
                    self.url, server_settings={"application_name": self.name, **KEEPALIVES},
                    timeout=5,
                )  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leadership: cannot connect: %s", exc)
                self._first_try.set()
                await asyncio.sleep(self.poll_seconds)
                continue
            self._conn = conn
            self.connected.set()
            try:
                await self._hold(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leadership: connection lost: %s", exc)
            finally:
                self.connected.clear()
                self._conn = None
                self._members = []
                await self._step_down()
                await close_quietly(conn)
                self._first_try.set()
            await asyncio.sleep(self.poll_seconds)

    async def _hold(self, conn: asyncpg.Connection) -> None:
        """Try for the lock until it is ours; then check the session every poll."""
        while True:
            if not self.is_leader:
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    LOCK_CLASS,
                    self.job,
                    timeout=5,
                )
                if got:
                    self.is_leader = True
                    self.elections += 1
                    log.info("leadership: %s leads %s", self.name, self.job)
                    try:
                        await self.on_elected()
                    except Exception:
                        log.exception("leadership: starting %s failed; stepping down", self.job)
                        await self._step_down()
                        await conn.execute(
                            "SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, self.job
                        )
            # who is there now (for /health); also proves the session, and the lock, live
            self._members = await self._read_members(conn)
            self._first_try.set()
            await asyncio.sleep(self.poll_seconds)

    async def _step_down(self) -> None:
        if self.is_leader:
            self.is_leader = False
            log.info("leadership: %s no longer leads %s", self.name, self.job)
            with contextlib.suppress(Exception):
                await self.on_deposed()
