"""Shared fixtures: one real PostgreSQL (the embedded server) for the whole session,
and a fresh database per test cloned from a migrated template."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from pgrealtime.db.embedded import EmbeddedPostgres
from pgrealtime.db.migrate import apply_migrations

TEMPLATE_DB = "pgrt_template"
_db_counter = itertools.count(1)


def _with_database(url: str, name: str) -> str:
    return url.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL server (wal_level=logical), started once."""
    root = Path(tempfile.mkdtemp(prefix="pgrt-test-"))
    os.chmod(root, 0o755)  # noqa: S103 - PostgreSQL runs as its own user and must read it
    port = 20000 + os.getpid() % 20000
    cluster = EmbeddedPostgres(root, port=port)
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
async def pg_admin_url(pg_cluster: EmbeddedPostgres) -> str:
    """URL of the cluster's `postgres` database; also builds the migrated template."""
    url = pg_cluster.url
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    template = await asyncpg.connect(_with_database(url, TEMPLATE_DB))
    try:
        await apply_migrations(template)
    finally:
        await template.close()
    return url


@pytest.fixture
async def db_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await conn.close()
    yield _with_database(pg_admin_url, name)
    conn = await asyncpg.connect(pg_admin_url)
    try:  # replication slots are cluster-wide and keep a database from being dropped
        await conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE database = $1 AND NOT active",
            name,
        )
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


# --- a running server ---------------------------------------------------------------

import json  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from pgrealtime import keys  # noqa: E402
from pgrealtime.app import create_app  # noqa: E402
from pgrealtime.auth import mint_token  # noqa: E402
from pgrealtime.config import Settings  # noqa: E402

JWT_SECRET = "test-secret-" + "x" * 32
API_KEY = "ik_test_admin_key"


@dataclass
class Client:
    """A WebSocket client that keeps frames it has not looked at yet."""

    ws: aiohttp.ClientWebSocketResponse
    inbox: list[dict] = field(default_factory=list)

    async def send(self, frame: dict | str) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict:
        if self.inbox:
            return self.inbox.pop(0)
        return await self._read(timeout)

    async def expect(self, frame_type: str, timeout: float = 5.0, **fields: Any) -> dict:
        """The next frame of `frame_type` (other frames are kept for later)."""
        for i, frame in enumerate(self.inbox):
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in fields.items()):
                return self.inbox.pop(i)
        while True:
            frame = await self._read(timeout)
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in fields.items()):
                return frame
            self.inbox.append(frame)

    async def request(self, frame: dict, timeout: float = 5.0) -> dict:
        """Send a frame with an id and return the reply that echoes it."""
        frame = {**frame, "id": frame.get("id", uuid.uuid4().hex)}
        await self.send(frame)
        for i, kept in enumerate(self.inbox):
            if kept.get("id") == frame["id"]:
                return self.inbox.pop(i)
        while True:
            reply = await self._read(timeout)
            if reply.get("id") == frame["id"]:
                return reply
            self.inbox.append(reply)

    async def _read(self, timeout: float) -> dict:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type}: {msg.data!r}")
        return json.loads(msg.data)

    async def auth(self, token: str) -> dict:
        return await self.request({"type": "auth", "token": token})

    async def subscribe(self, channel: str) -> dict:
        return await self.request({"type": "subscribe", "channel": channel})

    async def publish(self, channel: str, event: str, payload: dict) -> dict:
        return await self.request(
            {"type": "publish", "channel": channel, "event": event, "payload": payload}
        )

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Server:
    base: str
    app: Any
    http: aiohttp.ClientSession
    db: asyncpg.Pool
    clients: list[Client] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def token(self, sub: str | None = None, role: str = "authenticated", **kw: Any) -> str:
        if role == "authenticated" and sub is None:
            sub = str(uuid.uuid4())
        return mint_token(JWT_SECRET, role=role, sub=sub, **kw)

    async def api(self, method: str, path: str, *, headers: dict | None = None, **kw: Any):
        """(status, json body) of an admin REST call."""
        async with self.http.request(
            method, self.base + path, headers=self.admin if headers is None else headers, **kw
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def wait_streaming(self) -> None:
        """Until the change feed streams (db: subscriptions need it)."""
        feed = self.app[keys.CHANGES]
        for _ in range(200):
            if feed.status().get("state") == "streaming":
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"change feed not streaming: {feed.status()}")

    async def create_channel(self, pattern: str, **fields: Any) -> dict:
        status, body = await self.api("POST", "/api/realtime/channels",
                                      json={"pattern": pattern, **fields})  # fmt: skip
        assert status == 201, body
        return body

    async def connect(self, token: str | None = None) -> Client:
        client = Client(await self.http.ws_connect(self.base + "/realtime"))
        self.clients.append(client)
        if token is not None:
            reply = await client.auth(token)
            assert reply["type"] == "auth_success", reply
        return client


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll until `predicate()` holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "api_key": API_KEY,
        "heartbeat_seconds": 5.0,
        "db_pool_size": 5,
        "changes": False,  # a replication slot per test only where a test needs one
        # Off here, on by default: tests publish, subscribe and connect from loopback
        # faster and more often than one client should; a test of a limit sets it.
        "publish_rate": 0,
        "max_subscriptions": 0,
        "user_publish_rate": 0,
        "user_publish_bytes_rate": 0,
        "frame_rate": 0,
        "subscribe_rate": 0,
        "max_connections_per_ip": 0,
        # tests mint tokens on this host's clock: no leeway, so an expired token is one
        "jwt_leeway_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def server_settings() -> Settings:
    """Override in a test module to change the server's settings."""
    return make_settings()


@pytest.fixture
async def server(db_url: str, server_settings: Settings) -> AsyncIterator[Server]:
    """A real pgrealtime server on a loopback port, on a fresh database."""
    database = urlsplit(db_url).path.lstrip("/")
    server_settings = dataclasses.replace(
        server_settings, replication_slot=f"s_{database}", publication=f"p_{database}"
    )
    app = create_app(server_settings, db_url)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    http = aiohttp.ClientSession()
    db = await asyncpg.create_pool(db_url, min_size=1, max_size=3)
    srv = Server(str(test_server.make_url("")).rstrip("/"), app, http, db)
    try:
        yield srv
    finally:
        for client in srv.clients:
            await client.ws.close()
        await http.close()
        await db.close()
        await test_server.close()
