"""A client process that dies leaves the channel's presence: killed with SIGKILL (the
kernel closes its socket), or frozen with SIGSTOP (its socket stays open and silent,
so only the heartbeat can tell: no pong within half a period and it is cut). Never a
goodbye frame in either case."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import pytest
from tests.conftest import Client, Server, make_settings

# Connect, authenticate, subscribe, say so, then only read (aiohttp answers pings).
CLIENT = """
import asyncio, json, sys
import aiohttp

async def main(url, token, channel):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
            await ws.send_str(json.dumps({"type": "subscribe", "channel": channel}))
            async for msg in ws:
                if json.loads(msg.data).get("type") == "subscribed":
                    print("ready", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def _client_process(server: Server, user: str, channel: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, server.base + "/realtime", server.token(sub=user), channel,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"ready\n", line
    return proc


async def _next_presence(watcher: Client, timeout: float = 10.0) -> tuple[str, str]:
    frame = await watcher.expect("presence", timeout=timeout)
    return frame["event"], frame["member"]["presenceId"]


@pytest.mark.parametrize("server_settings", [make_settings(heartbeat_seconds=0.5)])
async def test_a_killed_or_frozen_client_process_leaves(server: Server) -> None:
    await server.create_channel("room:*")
    watcher = await server.connect(server.token())
    assert (await watcher.subscribe("room:k"))["type"] == "subscribed"

    killed = str(uuid.uuid4())
    proc = await _client_process(server, killed, "room:k")
    try:
        assert await _next_presence(watcher) == ("join", killed)
        proc.send_signal(signal.SIGKILL)
        assert await _next_presence(watcher) == ("leave", killed)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    frozen = str(uuid.uuid4())
    proc = await _client_process(server, frozen, "room:k")
    try:
        assert await _next_presence(watcher) == ("join", frozen)
        proc.send_signal(signal.SIGSTOP)  # silent, socket open: the heartbeat's case
        # pinged after 0.5 s of silence, cut when still unanswered at the next sweep
        assert await _next_presence(watcher) == ("leave", frozen)
    finally:
        proc.kill()
        await proc.wait()
