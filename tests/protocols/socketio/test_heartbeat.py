"""Engine.IO's heartbeat: the server pings every period even while the client talks (a
Socket.IO client gives up without pings), and cuts a peer whose pong does not come."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.conftest import Server, make_settings
from tests.protocols.socketio.sio_client import SioClient

from pgrealtime.config import Settings


@pytest.fixture
def server_settings() -> Settings:
    return make_settings(heartbeat_seconds=0.4)


async def test_pings_come_while_the_client_is_busy_and_a_silent_peer_is_cut(
    server: Server,
) -> None:
    await server.create_channel("chat:*")
    client = await SioClient.open(server.http, server.base)
    assert client.handshake["pingInterval"] == 400
    assert (await client.connect({"token": server.token()})).startswith("40")
    pings = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while loop.time() < deadline:  # busy: an event every 50 ms, pongs to every ping
        await client.ws.send_str('42["realtime:unsubscribe",{"channel":"chat:1"}]')
        try:
            msg = await client.ws.receive(timeout=0.05)
        except TimeoutError:
            continue
        if msg.data == "2":
            pings += 1
            await client.ws.send_str("3")
    assert pings >= 3
    # now silent: no pong; the server cuts the connection
    msg = None
    for _ in range(40):
        msg = await client.ws.receive(timeout=2)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break
    assert msg is not None and msg.type in (
        aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR
    )  # fmt: skip
