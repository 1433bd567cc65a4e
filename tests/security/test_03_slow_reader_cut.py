"""Finding 3: a reader that stops reading is cut in time, and the cut frees its
socket and buffer at once (no closing handshake waiting for a peer that reads
nothing)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from tests.conftest import Server, eventually, make_settings

from pgrealtime import keys

LIMIT = 64 * 1024


@pytest.fixture
def server_settings():
    # no heartbeat: it would cut the stalled peer too, on its own schedule
    return make_settings(send_buffer_bytes=LIMIT, heartbeat_seconds=0)


def _masked(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 65536
    return bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big") + b"\0\0\0\0" + data


async def _stalled_subscriber(server: Server, channel: str) -> asyncio.StreamWriter:
    """A raw client that upgrades by hand, subscribes, then never reads again."""
    host, port = server.base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_masked(json.dumps({"type": "auth", "token": server.token()})))
    writer.write(_masked(json.dumps({"type": "subscribe", "channel": channel})))
    await writer.drain()
    hub = server.app[keys.HUB]
    await eventually(lambda: hub.subscriber_count(channel) == 1)
    return writer


def _server_side(server: Server):
    """The stalled connection's transport, its kernel send buffer made small so that
    what the peer does not read piles up in the server's own buffer."""
    (session,) = server.app[keys.SESSIONS].live
    transport = session.outbox.transport
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return transport


async def _publish(server: Server, channel: str, count: int, size: int) -> None:
    await server.db.execute(
        "SELECT realtime.publish($1, 'e', jsonb_build_object('blob', repeat('z', $2), 'n', g))"
        " FROM generate_series(1, $3) AS g",
        channel,
        size,
        count,
    )


async def test_past_twice_the_limit_the_connection_is_dropped_at_once(server: Server) -> None:
    await server.create_channel("flood:*")
    writer = await _stalled_subscriber(server, "flood:1")
    transport = _server_side(server)
    server.app[keys.HUB].sweep_seconds = 3600  # no sweep in this test: only the hard cap acts
    await _publish(server, "flood:1", 400, 3500)  # 1.4 MB: far past 2x the limit
    sessions = server.app[keys.SESSIONS].live
    await eventually(lambda: not sessions, timeout=10)
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0  # the buffer was dropped, not kept
    assert server.app[keys.HUB].subscriber_count("flood:1") == 0
    writer.transport.abort()


async def test_a_reader_cut_by_the_sweep_is_dropped_without_a_handshake(server: Server) -> None:
    await server.create_channel("flood:*")
    writer = await _stalled_subscriber(server, "flood:1")
    transport = _server_side(server)
    delivery = server.app[keys.DELIVERY]
    sent = 0
    while transport.get_write_buffer_size() <= LIMIT:  # one 4 KB message at a time
        assert sent < 1000, "the backlog never grew"
        await _publish(server, "flood:1", 1, 4000)
        sent += 1
        await eventually(lambda n=sent: delivery.last_position("flood:1") == n)
    # over the limit, well under twice it: only the sweep can cut this one
    assert transport.get_write_buffer_size() < 2 * LIMIT
    hub = server.app[keys.HUB]
    await eventually(lambda: hub.subscriber_count("flood:1") == 0, timeout=10)  # the sweep
    sessions = server.app[keys.SESSIONS].live
    await eventually(lambda: not sessions, timeout=5)  # and the connection is gone with it
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    writer.transport.abort()
