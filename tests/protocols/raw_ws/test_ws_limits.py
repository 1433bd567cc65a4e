"""Limits: frame size and a subscriber that stops reading."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from tests.conftest import Server, make_settings

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(max_frame_bytes=4096, send_buffer_bytes=256 * 1024)


async def test_oversized_frame_is_refused_and_connection_lives(server: Server) -> None:
    client = await server.connect(server.token())
    await client.send({"type": "ping", "pad": "x" * 5000})
    err = await client.recv()
    assert err["code"] == "FRAME_TOO_LARGE"
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def _read_n(client, n: int) -> list[int]:
    return [(await client.expect("message", timeout=10))["payload"]["n"] for _ in range(n)]


async def test_slow_subscriber_is_cut_loose_and_others_keep_receiving(server: Server) -> None:
    await server.create_channel("flood:*")
    fast = await server.connect(server.token())
    await fast.subscribe("flood:1")
    # a raw client that completes the handshake, subscribes, then never reads again
    host, port = server.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(
        b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")

    def masked(text: str) -> bytes:
        data = text.encode()
        assert len(data) < 65536
        return bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big") + b"\0\0\0\0" + data

    writer.write(masked(json.dumps({"type": "auth", "token": server.token()})))
    writer.write(masked(json.dumps({"type": "subscribe", "channel": "flood:1"})))
    await writer.drain()
    await asyncio.sleep(0.3)
    # 3,000 messages of 3.5 KB outgrow every kernel buffer on the way to the stalled client.
    # They go out in statements of 50 (175 KB), read as they come: one write to a
    # connection that would leave more than twice the limit unsent cuts even a live
    # reader, so the reader that is to keep up gets no more than that at once.
    reading = asyncio.create_task(_read_n(fast, 3000))
    for first in range(1, 3001, 50):
        await server.db.execute(
            "SELECT realtime.publish('flood:1', 'e', jsonb_build_object('blob', repeat('z', 3500),"
            " 'n', g)) FROM generate_series($1::int, $1::int + 49) AS g",
            first,
        )
    assert await reading == list(range(1, 3001))
    hub = server.app[keys.HUB]
    for _ in range(100):  # the stalled one is cut at the next backlog sweep
        if hub.subscriber_count("flood:1") == 1:
            break
        await asyncio.sleep(0.05)
    assert hub.subscriber_count("flood:1") == 1
    writer.transport.abort()
