"""Three real server processes on one database joined by a real nats-server
(`--broker`): subscribers spread over all of them receive every message once and in
position order, published over WebSocket on any process and with SQL
`realtime.publish()` (read by one process for the cluster); with NATS stopped,
/health says degraded, publishes are still stored and answered, and once NATS is back
every process catches up from PostgreSQL: nothing stored is lost."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import asyncpg
import jwt
from tests.cluster.conftest import ADMIN, Nats, Proc, ProcFactory
from tests.conftest import JWT_SECRET

CHANNEL = "room:1"


class Peer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.positions: list[int] = []
        self.acks: list[str] = []

    async def until(self, count: int, timeout: float = 30.0, acks: int = 0) -> list[int]:
        async with asyncio.timeout(timeout):
            while len(self.positions) < count or len(self.acks) < acks:
                await self._read()
        return self.positions

    async def _read(self) -> None:
        frame = json.loads((await self.ws.receive()).data)
        if frame["type"] == "message":
            self.positions.append(frame["position"])
        elif frame["type"] == "published":
            self.acks.append(frame["messageId"])

    async def publish(self, n: int) -> None:
        await self.ws.send_json({"type": "publish", "channel": CHANNEL, "event": "e",
                                 "payload": {"n": n}, "id": f"p{n}"})  # fmt: skip


async def _peer(http: aiohttp.ClientSession, proc: Proc, token: str) -> Peer:
    ws = await http.ws_connect(proc.ws_url)
    await ws.send_json({"type": "auth", "token": token})
    assert (await ws.receive_json(timeout=10))["type"] == "auth_success"
    await ws.send_json({"type": "subscribe", "channel": CHANNEL, "id": "s"})
    assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
    return Peer(ws)


async def _health(proc: Proc) -> dict:
    async with aiohttp.ClientSession() as http, http.get(proc.base + "/health") as resp:
        return {"code": resp.status, **(await resp.json())}


async def test_nats_cluster_delivers_once_in_order_and_survives_a_broker_restart(
    processes: ProcFactory, nats_server: Nats, db_url: str
) -> None:
    procs = [processes("--broker", nats_server.url) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
    db = await asyncpg.connect(db_url)
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(procs[0].base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
        for proc in procs:  # every process is on the bus
            for _ in range(100):
                async with admin.get(proc.base + "/health") as resp:
                    details = (await resp.json())["details"]
                if details["bus"]["connected"]:
                    break
                await asyncio.sleep(0.1)
            assert details["bus"]["connected"], details
    readers = 0
    for proc in procs:
        async with aiohttp.ClientSession(headers=ADMIN) as admin:
            async with admin.get(proc.base + "/health") as resp:
                readers += (await resp.json())["details"]["bus"]["reads_sql_publishes"]
    assert readers == 1  # SQL publishes are read once per cluster
    notices: list[str] = []
    await db.add_listener("realtime_message", lambda *a: notices.append(a[3]))
    try:
        async with aiohttp.ClientSession() as http:
            peers = [await _peer(http, proc, token) for proc in procs for _ in range(2)]
            # 20 from a client of process 0, 20 of process 1, 10 from SQL, interleaved
            for n in range(20):
                await peers[0].publish(n)
                await peers[2].publish(100 + n)
                if n % 2 == 0:
                    await db.execute("SELECT realtime.publish($1, 'sql', '{}'::jsonb)", CHANNEL)
            for peer in peers:
                assert await peer.until(50) == list(range(1, 51))
            # the bus carries the processes' publishes: PostgreSQL NOTIFYs only SQL's
            assert len(notices) == 10 and {n.partition(":")[2] for n in notices} == {""}

            # the broker goes away: still serving, degraded, publishes stored
            nats_server.stop()
            for proc in procs:
                for _ in range(100):
                    health = await _health(proc)
                    if health["status"] == "degraded":
                        break
                    await asyncio.sleep(0.1)
                assert health == {"code": 200, "status": "degraded",
                                  "reason": "message bus (NATS) not connected"}  # fmt: skip
            for n in range(20, 30):
                await peers[0].publish(n)
            # stored, answered, and delivered at once by its own process
            assert await peers[0].until(60, acks=30) == list(range(1, 61))
            await nats_server.start()  # back: everyone catches up from PostgreSQL
            for peer in peers:
                assert await peer.until(60) == list(range(1, 61))
            await peers[4].publish(999)  # and the bus carries new ones again
            for peer in peers:
                assert await peer.until(61) == list(range(1, 62))
            for proc in procs:
                assert (await _health(proc))["status"] == "ok"
            # wsAudienceCount counts the subscribers reached on every process
            counts = set()
            for _ in range(100):
                counts = {r[0] for r in await db.fetch(
                    "SELECT ws_audience_count FROM realtime.messages WHERE channel_name = $1",
                    CHANNEL)}  # fmt: skip
                if counts == {len(peers)}:
                    break
                await asyncio.sleep(0.1)
            assert counts == {len(peers)}
    finally:
        await db.close()


async def test_a_broker_down_at_start_is_caught_up_when_it_comes(
    processes: ProcFactory, nats_server: Nats
) -> None:
    """Processes started while NATS is down serve (degraded), and what they stored
    meanwhile reaches the other process's subscribers once NATS is up."""
    nats_server.stop()
    procs = [processes("--broker", nats_server.url) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()  # 200 while degraded
        assert (await _health(proc))["status"] == "degraded"
    token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(procs[0].base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
    async with aiohttp.ClientSession() as http:
        local, remote = await _peer(http, procs[0], token), await _peer(http, procs[1], token)
        for n in range(5):
            await local.publish(n)
        assert await local.until(5, acks=5) == [1, 2, 3, 4, 5]
        await nats_server.start()
        assert await remote.until(5) == [1, 2, 3, 4, 5]


async def test_messages_reach_every_process_once_in_order_either_way(
    processes: ProcFactory, broker_args: list[str], db_url: str
) -> None:
    """Without a broker (NOTIFY) and over NATS: WebSocket publishes on two processes
    and SQL publishes reach subscribers on all three, once, in position order."""
    procs = [processes(*broker_args) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(procs[0].base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
        for proc in procs:  # every process hears the others
            for _ in range(100):
                async with admin.get(proc.base + "/health") as resp:
                    body = await resp.json()
                if body["status"] == "ok" and body["details"]["listener"] == "connected":
                    break
                await asyncio.sleep(0.1)
    db = await asyncpg.connect(db_url)
    try:
        async with aiohttp.ClientSession() as http:
            peers = [await _peer(http, proc, token) for proc in procs for _ in range(2)]
            for n in range(15):
                await peers[0].publish(n)
                await peers[2].publish(100 + n)
                if n % 3 == 0:
                    await db.execute("SELECT realtime.publish($1, 'sql', '{}'::jsonb)", CHANNEL)
            for peer in peers:
                assert await peer.until(35) == list(range(1, 36))
    finally:
        await db.close()
