"""Presence across three real server processes on one database, without a broker
(NOTIFY) and over a real nats-server: one member per user across processes, joins and
leaves once and in order at every process, a process killed with SIGKILL has its
members leave everywhere within the lease, and a process started later lists the
members of the others in its snapshots; one stopped with SIGTERM says goodbye; a NATS
outage longer than the lease heals when NATS is back, and a cut NOTIFY connection
without a broker is repaired by the heartbeat; `--workers 2` share presence."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import aiohttp
import asyncpg
import jwt
from tests.cluster.conftest import ADMIN, Nats, Proc, ProcFactory
from tests.conftest import JWT_SECRET

CHANNEL = "room:1"
LEASE = 3.0
TIMING = {"PGREALTIME_PRESENCE_HEARTBEAT_SECONDS": "0.5",
          "PGREALTIME_PRESENCE_LEASE_SECONDS": str(LEASE)}  # fmt: skip


def _token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": 2**31}, JWT_SECRET, "HS256")


class Member:
    """One user's connection subscribed to CHANNEL, recording presence frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, snapshot: list[dict]) -> None:
        self.ws = ws
        self.snapshot = snapshot
        self.events: list[tuple[str, str]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["type"] == "presence" and frame["channel"] == CHANNEL:
                self.events.append((frame["event"], frame["member"]["presenceId"]))

    def of(self, user: str) -> list[str]:
        return [event for event, who in self.events if who == user]

    async def until(self, user: str, events: list[str], timeout: float = 20.0) -> float:
        """Wait until `user`'s events here are `events`; the seconds it took."""
        start = time.monotonic()
        while self.of(user) != events:
            assert (
                len(self.of(user)) <= len(events) and self.of(user) == events[: len(self.of(user))]
            ), (user, self.events)
            assert time.monotonic() - start < timeout, (user, events, self.events)
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def _join(http: aiohttp.ClientSession, proc: Proc, user: str) -> Member:
    ws = await http.ws_connect(proc.ws_url)
    await ws.send_json({"type": "auth", "token": _token(user)})
    assert (await ws.receive_json(timeout=10))["type"] == "auth_success"
    await ws.send_json({"type": "subscribe", "channel": CHANNEL, "id": "s"})
    reply = await ws.receive_json(timeout=10)
    assert reply["type"] == "subscribed", reply
    return Member(ws, reply["presence"]["members"])


async def _processes_seen(proc: Proc) -> int:
    return (await proc.health())["details"]["presence"]["processes"]


async def _all_see(procs: list[Proc], count: int) -> None:
    for _ in range(200):
        if [await _processes_seen(p) for p in procs] == [count] * len(procs):
            return
        await asyncio.sleep(0.1)
    raise AssertionError([await _processes_seen(p) for p in procs])


async def test_presence_is_cluster_wide(processes: ProcFactory, broker_args: list[str]) -> None:
    procs = [processes(*broker_args, **TIMING) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(procs[0].base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
    await _all_see(procs, 3)
    watchers_ids = [str(uuid.uuid4()) for _ in procs]
    user, doomed = str(uuid.uuid4()), str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        watchers = []
        for proc, watcher_id in zip(procs, watchers_ids, strict=True):
            watchers.append(await _join(http, proc, watcher_id))
        for i, watcher in enumerate(watchers):  # the watchers see each other join
            for later in watchers_ids[i + 1 :]:
                await watcher.until(later, ["join"])

        # one user on two processes is one member: it joins with its first connection
        # anywhere and leaves with its last
        tab1 = await _join(http, procs[0], user)
        for watcher in watchers:
            await watcher.until(user, ["join"])
        tab2 = await _join(http, procs[1], user)
        snapshot_ids = [m["presenceId"] for m in tab2.snapshot]
        assert snapshot_ids.count(user) == 1 and set(watchers_ids) <= set(snapshot_ids)
        late = await _join(http, procs[2], str(uuid.uuid4()))
        # the second connection's join must have reached every process before the
        # first one closes: a leave racing ahead of it on the bus shows as leave + join
        await asyncio.sleep(1.0)
        assert [m["presenceId"] for m in late.snapshot].count(user) == 1
        await tab1.close()
        await asyncio.sleep(1.5)  # three heartbeats: a leave would have come
        for watcher in watchers:
            assert watcher.of(user) == ["join"], watcher.events
        await tab2.close()
        for watcher in watchers:
            await watcher.until(user, ["join", "leave"])

        # SIGKILL: the members of the killed process leave at the others within the lease
        victim = await _join(http, procs[2], doomed)
        for watcher in watchers[:2]:
            await watcher.until(doomed, ["join"])
        killed = time.monotonic()
        procs[2].kill()
        for watcher in watchers[:2]:
            await watcher.until(doomed, ["join", "leave"], timeout=LEASE + 10)
            await watcher.until(watchers_ids[2], ["join", "leave"], timeout=LEASE + 10)
        took = time.monotonic() - killed
        print(f"\nmembers of the killed process left {took:.1f}s after SIGKILL (lease {LEASE}s)")
        assert took < LEASE + 5
        await _all_see(procs[:2], 2)

        # a process started now lists the members of the others
        fresh = processes(*broker_args, **TIMING)
        fresh.start()
        await fresh.wait_healthy()
        await _all_see([*procs[:2], fresh], 3)
        newcomer_id = str(uuid.uuid4())
        newcomer = await _join(http, fresh, newcomer_id)
        listed = {m["presenceId"] for m in newcomer.snapshot}
        assert listed == {*watchers_ids[:2], newcomer_id}, newcomer.snapshot
        for watcher in watchers[:2]:  # and its members reach the others
            await watcher.until(newcomer_id, ["join"])

        # a clean stop (SIGTERM): its members leave at once, not after the lease
        stopped = time.monotonic()
        fresh.kill(signal.SIGTERM)
        for watcher in watchers[:2]:
            await watcher.until(newcomer_id, ["join", "leave"], timeout=LEASE + 10)
        took = time.monotonic() - stopped
        print(f"members of the stopped process left {took:.1f}s after SIGTERM")
        assert took < LEASE
        await _all_see(procs[:2], 2)
        for member in [*watchers, late, victim, newcomer]:
            await member.close()


async def test_a_bus_outage_longer_than_the_lease_heals(
    processes: ProcFactory, nats_server: Nats
) -> None:
    """NATS gone for longer than the lease: each process drops the others' members
    (it cannot tell a cut from a death); once it is back they learn each other's
    members again, those who joined meanwhile included."""
    procs = [processes("--broker", nats_server.url, **TIMING) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(procs[0].base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
    await _all_see(procs, 2)
    ids = [str(uuid.uuid4()) for _ in procs]
    meanwhile = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        a, b = [await _join(http, proc, who) for proc, who in zip(procs, ids, strict=True)]
        await a.until(ids[1], ["join"])
        nats_server.stop()
        await a.until(ids[1], ["join", "leave"], timeout=LEASE + 10)
        await b.until(ids[0], ["leave"], timeout=LEASE + 10)
        late = await _join(http, procs[1], meanwhile)  # joins while the bus is away
        await nats_server.start()
        await a.until(ids[1], ["join", "leave", "join"], timeout=30)
        await a.until(meanwhile, ["join"], timeout=30)
        await b.until(ids[0], ["leave", "join"], timeout=30)
        fresh = await _join(http, procs[0], str(uuid.uuid4()))
        assert {m["presenceId"] for m in fresh.snapshot} >= {*ids, meanwhile}
        for member in (a, b, late, fresh):
            await member.close()


async def test_workers_share_presence(processes: ProcFactory) -> None:
    """`--workers 2`: the kernel spreads the connections over both workers; every
    subscriber's snapshot lists the members of both."""
    proc = processes("--workers", "2", **TIMING)
    proc.start()
    await proc.wait_healthy()
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(proc.base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
    seen: dict[str, int] = {}
    for _ in range(200):  # each worker hears the other (health lands on either)
        async with aiohttp.ClientSession() as http:
            async with http.get(proc.base + "/health", headers=ADMIN) as resp:
                details = (await resp.json())["details"]
        seen[details["process"]] = details["presence"]["processes"]
        if len(seen) == 2 and set(seen.values()) == {2}:
            break
        await asyncio.sleep(0.05)
    assert len(seen) == 2 and set(seen.values()) == {2}, seen
    users = [str(uuid.uuid4()) for _ in range(8)]
    async with aiohttp.ClientSession() as http:
        members = [await _join(http, proc, user) for user in users]
        for _ in range(100):
            last = await _join(http, proc, str(uuid.uuid4()))
            await last.close()
            if {m["presenceId"] for m in last.snapshot} >= set(users):
                break
            await asyncio.sleep(0.1)
        assert {m["presenceId"] for m in last.snapshot} >= set(users), last.snapshot
        for member in members:
            await member.close()


async def test_a_lost_notify_connection_is_repaired(processes: ProcFactory, db_url: str) -> None:
    """Without a broker: the presence connection of one process is cut and a member
    joins there meanwhile (its message is lost); the heartbeat after the reconnect
    shows the others what they missed, and they ask for it."""
    procs = [processes(**TIMING) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_healthy()
    async with aiohttp.ClientSession(headers=ADMIN) as admin:
        async with admin.post(procs[0].base + "/api/realtime/channels",
                              json={"pattern": "room:*"}) as resp:  # fmt: skip
            assert resp.status == 201
    await _all_see(procs, 2)
    watcher_id, joiner = str(uuid.uuid4()), str(uuid.uuid4())
    db = await asyncpg.connect(db_url)
    try:
        async with aiohttp.ClientSession() as http:
            watcher = await _join(http, procs[0], watcher_id)
            second = (await procs[1].health())["details"]["process"].split(":")[2]
            cut = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1", f"pgrealtime presence {second}"
            )  # fmt: skip
            assert cut == 1
            member = await _join(http, procs[1], joiner)
            await watcher.until(joiner, ["join"], timeout=LEASE)  # before its lease ran out
            await member.close()
            await watcher.until(joiner, ["join", "leave"])
            await watcher.close()
    finally:
        await db.close()
