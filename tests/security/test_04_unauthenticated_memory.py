"""Finding 4: what anyone can make the server hold without logging in: echoed ids,
sessions that never authenticate, connections without number, frames without rate."""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import pytest
from tests.conftest import Server, make_settings

from pgrealtime import keys
from pgrealtime.config import add_connection_flags, add_server_flags, settings_from_args

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.fixture
def server_settings(request):
    return getattr(request, "param", make_settings())


async def _raw_reply(client, timeout: float = 5.0) -> aiohttp.WSMessage:
    return await client.ws.receive(timeout=timeout)


# -- request ids --------------------------------------------------------------------


async def test_a_long_id_is_refused_and_not_echoed(server: Server) -> None:
    client = await server.connect()  # no login needed
    await client.send({"type": "ping", "id": "x" * 900_000})
    msg = await _raw_reply(client)
    assert len(msg.data) < 1000  # not the 900 KB id back
    reply = json.loads(msg.data)
    assert reply["type"] == "error" and reply["code"] == "MALFORMED_FRAME"
    assert "id" not in reply
    ok = await client.request({"type": "ping", "id": "y" * 128})  # the longest allowed
    assert ok == {"type": "pong", "id": "y" * 128}


async def test_a_long_channel_is_not_echoed(server: Server) -> None:
    client = await server.connect(server.token())
    for frame_type in ("subscribe", "unsubscribe"):
        await client.send({"type": frame_type, "channel": "c" * 500_000, "id": frame_type})
        msg = await _raw_reply(client)
        assert len(msg.data) < 1000
        reply = json.loads(msg.data)
        assert reply["code"] == "INVALID_CHANNEL" and "channel" not in reply


# -- authentication timeout ---------------------------------------------------------


@pytest.mark.parametrize("server_settings", [make_settings(auth_timeout_seconds=1.0)],
                         indirect=True)  # fmt: skip
async def test_a_session_that_never_authenticates_is_closed(server: Server) -> None:
    idle = await server.connect()
    chatty = await server.connect()
    authed = await server.connect(server.token())
    for _ in range(40):  # talking (past the deadline) is not authenticating
        try:
            await chatty.send({"type": "ping"})
        except aiohttp.ClientConnectionResetError:
            break  # closed meanwhile
        await asyncio.sleep(0.05)
    for client in (idle, chatty):
        frames = []
        while (msg := await client.ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == "NOT_AUTHENTICATED"
    assert len(frames) > 1 and frames[0]["type"] == "pong"
    assert (await authed.request({"type": "ping"}))["type"] == "pong"  # it stays
    assert len(server.app[keys.SESSIONS].live) == 1


# -- connection caps ------------------------------------------------------------------


async def _upgrade_status(server: Server) -> tuple[int, dict]:
    async with server.http.get(server.base + "/realtime", headers=UPGRADE) as resp:
        body = await resp.json(content_type=None) if resp.status != 101 else {}
        return resp.status, body


@pytest.mark.parametrize("server_settings", [make_settings(max_connections_per_ip=2)],
                         indirect=True)  # fmt: skip
async def test_connections_per_address_are_capped_before_the_upgrade(server: Server) -> None:
    first = await server.connect()
    await server.connect()
    status, body = await _upgrade_status(server)
    assert status == 429
    assert body["error"] == "TOO_MANY_CONNECTIONS" and body["statusCode"] == 429
    await first.close()
    client = await _connect_eventually(server)
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("server_settings", [make_settings(max_connections=3)], indirect=True)
async def test_connections_in_all_are_capped_before_the_upgrade(server: Server) -> None:
    clients = [await server.connect() for _ in range(3)]
    status, body = await _upgrade_status(server)
    assert status == 503 and body["error"] == "TOO_MANY_CONNECTIONS"
    await clients[0].close()
    await _connect_eventually(server)


async def _connect_eventually(server: Server):
    for _ in range(100):
        try:
            return await server.connect()
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    raise AssertionError("a slot was never freed")


# -- frame and subscribe rates --------------------------------------------------------


@pytest.mark.parametrize("server_settings", [make_settings(frame_rate=1, frame_burst=10)],
                         indirect=True)  # fmt: skip
async def test_frames_over_the_rate_are_refused(server: Server) -> None:
    client = await server.connect()  # before auth: pings and auths count too
    for n in range(30):
        await client.send({"type": "ping", "id": n})
    replies = [await client.recv() for _ in range(30)]
    assert [r["id"] for r in replies] == list(range(30))
    limited = [r for r in replies if r["type"] == "error"]
    assert all(r["code"] == "RATE_LIMITED" for r in limited)
    assert 15 <= len(limited) <= 20  # a burst of 10 (and what refills meanwhile) passed
    await client.send("not json")  # a malformed frame spends a token too
    assert (await client.recv())["code"] == "RATE_LIMITED"


@pytest.mark.parametrize(
    "server_settings", [make_settings(subscribe_rate=1, subscribe_burst=3)], indirect=True
)
async def test_subscribes_over_their_rate_are_refused(server: Server) -> None:
    await server.create_channel("room:*")
    client = await server.connect(server.token())
    replies = [await client.subscribe(f"room:{n}") for n in range(10)]
    assert replies[0]["type"] == "subscribed"
    limited = [r for r in replies if r.get("code") == "RATE_LIMITED"]
    assert 6 <= len(limited) <= 7
    assert all(r["channel"].startswith("room:") for r in limited)
    assert (await client.request({"type": "ping"}))["type"] == "pong"  # other frames pass


def test_serve_applies_the_new_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_connection_flags(parser)
    add_server_flags(parser)
    settings = settings_from_args(parser.parse_args([]))
    assert settings.auth_timeout_seconds == 10
    assert settings.max_connections == 10_000
    assert settings.max_connections_per_ip == 100
    assert (settings.frame_rate, settings.frame_burst) == (200, 400)
    assert (settings.subscribe_rate, settings.subscribe_burst) == (10, 50)
