"""A database failure between the pages of a resume: the subscriber is told
(SERVICE_UNAVAILABLE for that channel), its connection lives, the pool recovers, and
a resubscribe with `since` loses nothing.

The server reaches PostgreSQL through a small Unix-socket proxy the test can take
down (every connection cut, new ones closed at once: the database is out of reach,
as when its host goes away) and bring back. The test's own statements go straight to
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from tests.conftest import Server, eventually, make_settings
from tests.security.test_05_resume_bounded import (
    _masked,
    _read_positions,
    _read_text_frame,
    _stalled_subscriber,
)

from pgrealtime import keys

LIMIT = 64 * 1024


class OutageProxy:
    """Forwards PostgreSQL connections from one Unix socket to another until `down`."""

    def __init__(self, upstream: str, socket_path: str) -> None:
        self.upstream = upstream
        self.socket_path = socket_path
        self.is_down = False
        self.stalled = asyncio.Event()  # set: nothing is forwarded (a hung database)
        self.stalled.set()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)

    def down(self) -> None:
        self.is_down = True
        for writer in list(self._writers):
            writer.transport.abort()

    def stall(self) -> None:
        """The database stops answering: connections stay open, nothing goes through."""
        self.stalled.clear()

    def up(self) -> None:
        self.is_down = False
        self.stalled.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_down:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        with contextlib.suppress(Exception):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.stalled.wait()
            writer.write(data)
            await writer.drain()


@pytest.fixture
def direct() -> list[str]:
    return []


@pytest.fixture
def proxies() -> list[OutageProxy]:
    return []


@pytest.fixture
async def db_url(db_url: str, direct: list[str], proxies: list[OutageProxy]) -> AsyncIterator[str]:
    """The test's database, reached by the server through an OutageProxy."""
    direct.append(db_url)
    query = parse_qs(urlsplit(db_url).query)
    socket_dir, port = query["host"][0], query["port"][0]
    folder = tempfile.mkdtemp(prefix="pxy")
    proxy = OutageProxy(f"{socket_dir}/.s.PGSQL.{port}", f"{folder}/.s.PGSQL.{port}")
    await proxy.start()
    proxies.append(proxy)
    yield db_url.replace(f"host={socket_dir}", f"host={folder}")
    await proxy.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server_settings():
    return make_settings(
        send_buffer_bytes=LIMIT, heartbeat_seconds=0, recover_read_timeout_seconds=1
    )


async def _publish(conn: asyncpg.Connection, count: int) -> None:
    await conn.execute(
        "SELECT realtime.publish('feed', 'e', jsonb_build_object('blob', repeat('z', 3000)))"
        " FROM generate_series(1, $1)",
        count,
    )


async def _frames_until_error(reader: asyncio.StreamReader) -> tuple[list[int], dict]:
    positions: list[int] = []
    while True:
        frame = await asyncio.wait_for(_read_text_frame(reader), 20)
        if frame["type"] == "message":
            positions.append(frame["position"])
        elif frame["type"] == "error":
            return positions, frame


@pytest.mark.parametrize("failure", ["down", "stall"])
async def test_a_database_failure_between_resume_pages(
    server: Server, direct: list[str], proxies: list[OutageProxy], failure: str
) -> None:
    (proxy,) = proxies
    conn = await asyncpg.connect(direct[0])
    try:
        await server.create_channel("feed")
        await _publish(conn, 600)  # ~2 MB of history: dozens of pages
        reader, writer, session = await _stalled_subscriber(server, since=0)
        ordering = server.app[keys.DELIVERY]
        await eventually(lambda: session.outbox.backlog() > 0)
        assert ordering._recoveries  # the resume waits between pages on its reader

        getattr(proxy, failure)()  # the database goes out of reach, or stops answering
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # read on
        got, error = await _frames_until_error(reader)
        assert error["code"] == "SERVICE_UNAVAILABLE" and error["channel"] == "feed", error
        assert "since" in error["message"]
        assert 0 < len(got) < 600 and got == list(range(1, len(got) + 1))
        assert "feed" not in session.subscriptions
        await eventually(lambda: not ordering._recoveries)
        writer.write(_masked(json.dumps({"type": "ping", "id": "p"})))
        pong = await asyncio.wait_for(_read_text_frame(reader), 10)
        assert pong == {"type": "pong", "id": "p"}  # the connection lives

        proxy.up()  # back: the pool replaces its connections on next use
        since = got[-1]
        writer.write(_masked(json.dumps(
            {"type": "subscribe", "channel": "feed", "since": since, "id": "again"})))  # fmt: skip
        reply = await asyncio.wait_for(_read_text_frame(reader), 10)
        assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
        assert await _read_positions(reader, 600) == list(range(since + 1, 601))
        await _publish(conn, 2)
        assert await _read_positions(reader, 602) == [601, 602]  # live again
        writer.transport.abort()
    finally:
        proxy.up()  # or the teardown's pools would wait on a stalled database
        await conn.close()
