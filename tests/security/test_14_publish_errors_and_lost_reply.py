"""Finding 14: a publish that fails in the database is not reported as a refusal, and
a batch stored without the server hearing back still reaches local subscribers.

The server's database connections go through a small Unix-socket proxy here. Armed, it
cuts the next publish-lane connection at the first bytes PostgreSQL sends back: the
reply to a publish, sent after its transaction committed (the backend flushes the rows
with ReadyForQuery, after COMMIT). So the batch is stored and its reply is lost, for
real.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.conftest import Server, eventually

from pgrealtime import keys

PUBLISHER_TAG = b"pgrealtime publisher"  # the lanes' application_name


class CuttingProxy:
    """Forwards PostgreSQL connections from one Unix socket to another."""

    def __init__(self, upstream: str, socket_path: str) -> None:
        self.upstream = upstream
        self.socket_path = socket_path
        self.armed = False
        self.cut = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        startup = await reader.read(65536)
        lane = PUBLISHER_TAG in startup
        up_writer.write(startup)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, False)),
            asyncio.create_task(self._pump(up_reader, writer, lane)),
        ]
        self._tasks.update(pumps)
        with contextlib.suppress(Exception):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lane: bool
    ) -> None:
        while data := await reader.read(65536):
            if lane and self.armed:
                self.armed = False
                self.cut.set()
                return  # the reply is dropped and both sides closed
            writer.write(data)
            await writer.drain()


@pytest.fixture
def proxies() -> list[CuttingProxy]:
    return []


@pytest.fixture
async def db_url(db_url: str, proxies: list[CuttingProxy]) -> AsyncIterator[str]:
    """The test's database, reached through a CuttingProxy (unarmed, it just forwards)."""
    query = parse_qs(urlsplit(db_url).query)
    socket_dir, port = query["host"][0], query["port"][0]
    folder = tempfile.mkdtemp(prefix="pxy")
    cutter = CuttingProxy(f"{socket_dir}/.s.PGSQL.{port}", f"{folder}/.s.PGSQL.{port}")
    await cutter.start()
    proxies.append(cutter)
    yield db_url.replace(f"host={socket_dir}", f"host={folder}")
    await cutter.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def proxy(db_url: str, proxies: list[CuttingProxy]) -> CuttingProxy:
    return proxies[0]


REFUSING_TRIGGERS = """
CREATE TABLE public.gate (id int PRIMARY KEY);
INSERT INTO public.gate VALUES (1);
CREATE FUNCTION public.app_rules() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
  IF NEW.event_name = 'boom' THEN
    RAISE EXCEPTION 'the application refuses boom';
  END IF;
  IF NEW.event_name = 'wait' THEN  -- waits for a lock the test holds, briefly
    PERFORM set_config('lock_timeout', '200ms', true);
    PERFORM 1 FROM public.gate WHERE id = 1 FOR UPDATE;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER app_rules BEFORE INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION public.app_rules();
"""


async def test_sql_errors_are_not_reported_as_unauthorized(server: Server) -> None:
    await server.db.execute(REFUSING_TRIGGERS)
    await server.create_channel("app:*")
    client = await server.connect(server.token())
    await client.subscribe("app:1")
    await client.send({"type": "publish", "channel": "app:1", "event": "boom", "payload": {},
                       "id": "boom"})  # fmt: skip
    ok = await client.publish("app:1", "fine", {})
    failed = await client.expect("error", id="boom")
    assert failed["code"] == "PUBLISH_FAILED", failed
    assert "P0001" in failed["message"]
    assert ok["type"] == "published"  # the other message of the batch is stored

    async with server.db.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM public.gate WHERE id = 1 FOR UPDATE")
        busy = await client.publish("app:1", "wait", {})
    assert busy["code"] == "SERVICE_UNAVAILABLE", busy  # lock timeout: try again
    assert "55P03" in busy["message"] and "try again" in busy["message"]
    assert (await client.publish("app:1", "wait", {}))["type"] == "published"


async def test_a_batch_stored_whose_reply_was_lost_still_reaches_subscribers(
    proxy: CuttingProxy, server: Server
) -> None:
    await server.create_channel("lost:*")
    publisher = await server.connect(server.token())
    watcher = await server.connect(server.token())
    for client in (publisher, watcher):
        await client.subscribe("lost:1")
    # once, so the lane's statement is prepared: the next bytes it gets are a reply
    assert (await publisher.publish("lost:1", "warm", {}))["type"] == "published"
    assert (await watcher.expect("message"))["position"] == 1

    proxy.armed = True
    reply = await publisher.publish("lost:1", "lost", {"n": 2})
    assert proxy.cut.is_set()
    assert reply["code"] == "SERVICE_UNAVAILABLE", reply  # the server cannot know
    stored = await server.db.fetchval("SELECT id FROM realtime.messages WHERE event_name = 'lost'")
    assert stored is not None  # committed all the same

    # handed out here (checked without a socket read that could time out mid-frame)
    delivery = server.app[keys.DELIVERY]
    await eventually(lambda: delivery.last_position("lost:1") == 2, timeout=10)
    message = await watcher.expect("message", timeout=10)
    assert (message["messageId"], message["position"]) == (str(stored), 2)
    mine = await publisher.expect("message", timeout=10, position=2)
    assert mine["messageId"] == str(stored)
    # the lane reconnects and goes on, with no duplicate
    after = await publisher.publish("lost:1", "after", {})
    assert after["position"] == 3
    assert (await watcher.expect("message"))["position"] == 3
