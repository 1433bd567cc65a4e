"""SIGTERM in the middle of a publish storm, on the real `pgrealtime serve` process with
its embedded PostgreSQL: nothing acknowledged is lost, nothing stored goes unanswered,
every client sees 1001, the process exits 0, and the same data dir serves again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import jwt
import pytest
from tests.conftest import API_KEY, JWT_SECRET

from pgrealtime.db.embedded import EmbeddedPostgres

PGREALTIME = [sys.executable, "-m", "pgrealtime.cli"]
CHANNEL = "storm:1"
SUBSCRIBERS = 2
SIGTERM_AFTER = 300  # acknowledged publishes before the signal
WINDOW = 200  # publishes in flight at once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir the embedded PostgreSQL's user can reach (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pgrt-stop-"))
    os.chmod(path, 0o755)  # noqa: S103
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Serve:
    """One `pgrealtime serve` process with its own embedded PostgreSQL."""

    data_dir: Path
    port: int = field(default_factory=_free_port)
    embedded_port: int = field(default_factory=_free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGREALTIME_")}
        env.pop("DATABASE_URL", None)
        env.update(PGREALTIME_JWT_SECRET=JWT_SECRET, PGREALTIME_API_KEY=API_KEY)
        log = (self.data_dir / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [*PGREALTIME, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--embedded-port", str(self.embedded_port), "--log-format", "text",
             "--publish-rate", "0", "--frame-rate", "0", "--user-publish-rate", "0",
             "--user-publish-bytes-rate", "0"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    async def wait_healthy(self) -> None:
        assert self.proc is not None
        async with aiohttp.ClientSession() as http:
            for _ in range(1200):  # the first start runs initdb
                assert self.proc.poll() is None, self.log()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.base + "/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError("server did not become healthy\n" + self.log())

    def log(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")

    def kill(self) -> None:
        """After a failure: leave no server and no PostgreSQL behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        embedded = EmbeddedPostgres(self.data_dir, port=self.embedded_port)
        if embedded.is_running():
            embedded.stop(mode="immediate")


@dataclass
class Peer:
    """A WebSocket client that records everything until the server closes it."""

    ws: aiohttp.ClientWebSocketResponse
    messages: list[dict] = field(default_factory=list)
    acks: dict[int, str] = field(default_factory=dict)  # request id -> messageId
    errors: list[dict] = field(default_factory=list)
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(WINDOW))

    async def read_until_closed(self) -> tuple[int | None, str]:
        """(close code, reason) of the server's close frame."""
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra
            if msg.type != aiohttp.WSMsgType.TEXT:
                return None, f"{msg.type}: {msg.data}"
            frame = json.loads(msg.data)
            if frame["type"] == "message":
                self.messages.append(frame)
            elif frame["type"] == "published":
                self.acks[frame["id"]] = frame["messageId"]
                self.window.release()
            elif frame["type"] == "error":
                self.errors.append(frame)
                self.window.release()


async def _peer(http: aiohttp.ClientSession, base: str, token: str) -> Peer:
    ws = await http.ws_connect(base + "/realtime", autoclose=True)
    await ws.send_json({"type": "auth", "token": token})
    assert (await ws.receive_json())["type"] == "auth_success"
    await ws.send_json({"type": "subscribe", "channel": CHANNEL})
    assert (await ws.receive_json())["type"] == "subscribed"
    return Peer(ws)


async def _storm(peer: Peer, sent: list[int]) -> None:
    """Publish as fast as the window allows until the connection goes away."""
    n = 0
    while True:
        await peer.window.acquire()
        frame = {"type": "publish", "channel": CHANNEL, "event": "tick", "payload": {"n": n},
                 "id": n}  # fmt: skip
        try:
            await peer.ws.send_json(frame)
        except (ConnectionError, aiohttp.ClientError):
            return
        sent.append(n)
        n += 1


async def _history(http: aiohttp.ClientSession, base: str) -> list[dict]:
    rows: list[dict] = []
    while True:
        url = f"{base}/api/realtime/messages?limit=1000&offset={len(rows)}"
        async with http.get(url) as resp:
            assert resp.status == 200
            page = await resp.json()
        rows += page
        if len(page) < 1000:
            return rows


async def test_sigterm_mid_storm_loses_nothing_acknowledged(data_dir: Path) -> None:
    serve = Serve(data_dir)
    token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
    try:
        serve.start()
        await serve.wait_healthy()
        assert serve.proc is not None
        admin = {"Authorization": f"Bearer {API_KEY}"}
        async with aiohttp.ClientSession(headers=admin) as http:
            async with http.post(
                serve.base + "/api/realtime/channels", json={"pattern": "storm:*"}
            ) as resp:
                assert resp.status == 201
            subscribers = [await _peer(http, serve.base, token) for _ in range(SUBSCRIBERS)]
            publisher = await _peer(http, serve.base, token)
            peers = [*subscribers, publisher]
            readers = [asyncio.create_task(p.read_until_closed()) for p in peers]
            sent: list[int] = []
            storm = asyncio.create_task(_storm(publisher, sent))
            while len(publisher.acks) < SIGTERM_AFTER:
                assert not readers[-1].done(), publisher.errors
                await asyncio.sleep(0.005)
            serve.proc.send_signal(signal.SIGTERM)
            closes = await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
            storm.cancel()
            await asyncio.gather(storm, return_exceptions=True)
            exit_code = await asyncio.to_thread(serve.proc.wait, 60)
        assert exit_code == 0, serve.log()
        assert closes == [(1001, "server shutting down")] * len(peers)
        assert publisher.errors == []
        acked = set(publisher.acks.values())
        assert len(acked) == len(publisher.acks) >= SIGTERM_AFTER
        for peer in peers:  # every acknowledged message arrived, in order, before 1001
            received = [m["messageId"] for m in peer.messages]
            assert set(received) == acked
            assert [m["payload"]["n"] for m in peer.messages] == sorted(publisher.acks)
        pg_log = (data_dir / "pg" / "server.log").read_text(errors="replace")
        assert "database system is shut down" in pg_log

        # the same data dir serves again, with every acknowledged message in history
        serve.start()
        await serve.wait_healthy()
        async with aiohttp.ClientSession(headers=admin) as http:
            stored = await _history(http, serve.base)
            assert {m["id"] for m in stored} == acked  # nothing stored went unanswered
            # audience counts (2 subscribers + the publisher) were written at shutdown
            assert {m["wsAudienceCount"] for m in stored} == {len(peers)}
            again = await _peer(http, serve.base, token)
            await again.ws.send_json({"type": "publish", "channel": CHANNEL, "event": "tick",
                                      "payload": {"n": -1}, "id": "after"})  # fmt: skip
            reply = await again.ws.receive_json(timeout=10)
            while reply["type"] == "message":
                reply = await again.ws.receive_json(timeout=10)
            assert reply["type"] == "published" and reply["messageId"] not in acked
            await again.ws.close()
        pg_log = (data_dir / "pg" / "server.log").read_text(errors="replace")
        assert "not properly shut down" not in pg_log
        print(
            f"\nSIGTERM figures: sent {len(sent)}, acknowledged {len(acked)},"
            f" stored {len(stored)}, delivered per client"
            f" {[len(p.messages) for p in peers]}, unanswered {len(sent) - len(acked)}"
        )
        serve.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(serve.proc.wait, 60) == 0
    finally:
        serve.kill()
