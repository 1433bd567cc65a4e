"""`db:<table>` changes on every process of a cluster: three real server processes on
one database. Before, only the process holding the replication slot delivered them: a
subscriber elsewhere got `subscribed` and then nothing (0 of 50). Now the slot holder
relays what it reads, each process checks row level security for its own subscribers,
and when the holder is killed (SIGKILL) another takes the slot over within seconds and
goes on from the slot's confirmed position: every change once, in order."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import asyncpg
import jwt
from tests.cluster.conftest import Proc, ProcFactory
from tests.conftest import JWT_SECRET

PROCESSES = 3
ROWS = 50


def _token(sub: str) -> str:
    return jwt.encode({"sub": sub, "role": "authenticated", "exp": 2**31}, JWT_SECRET, "HS256")


class Subscriber:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[int] = []

    async def until(self, count: int, timeout: float = 30.0) -> list[int]:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                frame = json.loads((await self.ws.receive()).data)
                if frame["type"] == "message":
                    self.seen.append(frame["payload"]["new"]["n"])
        return self.seen

    async def nothing_more(self) -> None:
        """A ping's pong comes after anything already sent: nothing else arrived."""
        await asyncio.sleep(1.0)
        await self.ws.send_json({"type": "ping", "id": "p"})
        while True:
            frame = json.loads((await self.ws.receive(timeout=10)).data)
            if frame["type"] == "pong":
                return
            assert frame["type"] != "message", f"delivered more than once: {frame}"


async def _subscribe(http: aiohttp.ClientSession, proc: Proc, sub: str) -> Subscriber:
    ws = await http.ws_connect(proc.ws_url)
    await ws.send_json({"type": "auth", "token": _token(sub)})
    assert (await ws.receive_json(timeout=10))["type"] == "auth_success"
    await ws.send_json({"type": "subscribe", "channel": "db:items", "id": 1})
    reply = await ws.receive_json(timeout=10)
    assert reply["type"] == "subscribed", (proc.base, reply)
    return Subscriber(ws)


async def _insert(db: asyncpg.Connection, owner: str, numbers: range) -> None:
    for n in numbers:  # one transaction each
        await db.execute("INSERT INTO items (n, owner) VALUES ($1, $2)", n, uuid.UUID(owner))


async def _cluster(procs: list[Proc]) -> list[dict]:
    return [(await p.health())["details"]["cluster"] for p in procs]


async def test_changes_reach_every_process_once_in_order_across_a_failover(
    processes: ProcFactory, db_url: str, broker_args: list[str]
) -> None:
    procs = [processes(*broker_args) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    db = await asyncpg.connect(db_url)
    await db.execute(
        """
        CREATE TABLE items (n int PRIMARY KEY, owner uuid NOT NULL);
        GRANT SELECT ON items TO authenticated;
        ALTER TABLE items ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own ON items FOR SELECT TO authenticated USING (owner = auth.uid());
        """
    )
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        views = await _cluster(procs)
        for _ in range(100):  # each process refreshes its view of the members every second
            if all(len(v["members"]) == PROCESSES for v in views):
                break
            await asyncio.sleep(0.1)
            views = await _cluster(procs)
        leaders = {v["leader"] for v in views}
        assert len(leaders) == 1 and None not in leaders, views
        assert all(len(v["members"]) == PROCESSES for v in views), [v["members"] for v in views]
        assert sorted(v["role"] for v in views) == ["leader"] + ["standby"] * (PROCESSES - 1)
        async with aiohttp.ClientSession() as http:
            alices = [await _subscribe(http, p, alice) for p in procs]
            bobs = [await _subscribe(http, p, bob) for p in procs]
            await _insert(db, alice, range(ROWS))
            for subscriber in alices:  # every process, all of them, once, in order
                assert await subscriber.until(ROWS) == list(range(ROWS))
            for subscriber in bobs:  # each process checked RLS for its own subscribers
                await subscriber.nothing_more()
                assert subscriber.seen == []

            # kill the slot holder mid-stream: the others take over and lose nothing
            leader = next(i for i, v in enumerate(views) if v["role"] == "leader")
            writer = asyncio.create_task(_insert(db, alice, range(ROWS, 3 * ROWS)))
            await asyncio.sleep(0.2)
            killed = time.monotonic()
            procs[leader].kill()
            survivors = [p for i, p in enumerate(procs) if i != leader]
            took = None
            while took is None:
                views = await _cluster(survivors)
                if any(v["role"] == "leader" for v in views):
                    took = time.monotonic() - killed
                else:
                    assert time.monotonic() - killed < 30, views
                    await asyncio.sleep(0.1)
            await writer
            for i, subscriber in enumerate(alices):
                if i == leader:
                    continue
                assert await subscriber.until(3 * ROWS) == list(range(3 * ROWS))
                await subscriber.nothing_more()
            if broker_args:  # the standbys took the relayed rows from the bus
                relay = [(await p.health())["details"]["changes"]["relay"] for p in survivors]
                assert all(r["over_bus"] for r in relay), relay
                assert sum(r["rows_from_bus"] for r in relay) > 0, relay
            print(f"\nslot taken over {took:.1f}s after the holder was killed")
            assert took < 10  # within 1 s poll + the slot's release; 5 s on a quiet machine
    finally:
        await db.close()
