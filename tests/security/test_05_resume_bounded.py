"""Finding 5: a resume is bounded in bytes, read in pages sent as the reader takes
them, and history reads in flight are bounded for the process."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from tests.conftest import Server, eventually, make_settings

from pgrealtime import keys

LIMIT = 64 * 1024


@pytest.fixture
def server_settings(request):
    return getattr(request, "param", make_settings(send_buffer_bytes=LIMIT, heartbeat_seconds=0))


async def _publish(server: Server, channel: str, count: int, size: int = 3000) -> None:
    await server.db.execute(
        "SELECT realtime.publish($1, 'e', jsonb_build_object('blob', repeat('z', $2), 'n', g))"
        " FROM generate_series(1, $3) AS g",
        channel,
        size,
        count,
    )


async def _positions(client, n: int) -> list[int]:
    return [(await client.expect("message", timeout=10))["position"] for _ in range(n)]


@pytest.mark.parametrize("server_settings", [make_settings(max_recover_bytes=40_000)],
                         indirect=True)  # fmt: skip
async def test_a_resume_beyond_the_byte_limit_sends_the_newest_that_fit(server: Server) -> None:
    await server.create_channel("feed")
    await _publish(server, "feed", 30)  # ~90 KB of frames
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": 0})
    assert reply["recovered"] is False and reply["position"] == 30
    missed = reply["missed"]
    assert 0 < missed and missed * 3000 <= 40_000
    assert await _positions(client, missed) == list(range(31 - missed, 31))
    await _publish(server, "feed", 1)
    assert await _positions(client, 1) == [31]  # then live


async def test_a_resume_larger_than_the_send_buffer_reaches_a_live_reader(server: Server) -> None:
    await server.create_channel("feed")
    await _publish(server, "feed", 600)  # ~2 MB: 30 times the connection's limit
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": 0})
    assert reply["recovered"] is True and reply["missed"] == 600
    assert await _positions(client, 600) == list(range(1, 601))
    assert (await client.request({"type": "ping"}))["type"] == "pong"  # not cut


def _masked(text: str) -> bytes:
    data = text.encode()
    return bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big") + b"\0\0\0\0" + data


async def test_a_resume_to_a_stalled_reader_waits_instead_of_loading(server: Server) -> None:
    await server.create_channel("feed")
    await _publish(server, "feed", 600)
    host, port = server.base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    (session,) = server.app[keys.SESSIONS].live
    transport = session.outbox.transport
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer.write(_masked(json.dumps({"type": "auth", "token": server.token()})))
    writer.write(_masked(json.dumps({"type": "subscribe", "channel": "feed", "since": 0})))
    await writer.drain()
    await eventually(lambda: "feed" in session.subscriptions)
    await eventually(lambda: transport.get_write_buffer_size() > 0)
    await asyncio.sleep(1.5)  # past a sweep: nothing more was written, nothing was cut
    assert session in server.app[keys.SESSIONS].live
    assert transport.get_write_buffer_size() <= LIMIT
    assert "feed" in server.app[keys.DELIVERY]._recoveries  # still resuming, waiting
    writer.transport.abort()  # the peer leaves: the resume ends with it
    await eventually(lambda: not server.app[keys.SESSIONS].live)
    await eventually(lambda: not server.app[keys.DELIVERY]._recoveries)


@pytest.mark.parametrize("server_settings", [make_settings(max_concurrent_recoveries=1)],
                         indirect=True)  # fmt: skip
async def test_history_reads_in_flight_are_bounded(server: Server) -> None:
    await server.create_channel("feed")
    await _publish(server, "feed", 5)
    client = await server.connect(server.token())
    slots = server.app[keys.SESSION_CONTEXT].recoveries
    await slots.acquire()  # the one slot taken: a resume has to wait for it
    try:
        await client.send({"type": "subscribe", "channel": "feed", "since": 0, "id": "r"})
        with pytest.raises(asyncio.TimeoutError):
            await client.recv(timeout=0.5)
    finally:
        slots.release()
    reply = await client.recv()
    assert reply["type"] == "subscribed" and reply["missed"] == 5
    assert await _positions(client, 5) == [1, 2, 3, 4, 5]


LIVE_LIMIT = 32 * 1024


async def _stalled_subscriber(server: Server, since: int) -> tuple:
    """A raw WebSocket client with tiny socket buffers that reads nothing until told:
    its resume waits between pages for as long as the test wants."""
    host, port = server.base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    (session,) = server.app[keys.SESSIONS].live
    session.outbox.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
    )
    writer.write(_masked(json.dumps({"type": "auth", "token": server.token()})))
    writer.write(_masked(json.dumps({"type": "subscribe", "channel": "feed", "since": since})))
    await writer.drain()
    await eventually(lambda: "feed" in session.subscriptions)
    return reader, writer, session


async def _read_text_frame(reader: asyncio.StreamReader) -> dict:
    """One server frame (unmasked, text): its JSON."""
    head = await reader.readexactly(2)
    assert head[0] & 0x0F == 1, head  # a text frame
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return json.loads(await reader.readexactly(size))


async def _read_positions(reader: asyncio.StreamReader, upto: int) -> list[int]:
    positions: list[int] = []
    while not positions or positions[-1] < upto:
        frame = await asyncio.wait_for(_read_text_frame(reader), 10)
        if frame["type"] == "message":
            positions.append(frame["position"])
    return positions


@pytest.mark.parametrize("server_settings", [make_settings(
    send_buffer_bytes=LIMIT, heartbeat_seconds=0, max_recover_live_bytes=LIVE_LIMIT)],
    indirect=True)  # fmt: skip
async def test_live_messages_during_a_long_resume_are_held_within_a_bound(server: Server) -> None:
    """A busy channel while a resume of many pages waits on its reader: what is
    collected for the resumer stays within --max-recover-live-bytes, and what was
    dropped is read back from the table, so every position still arrives once, in
    order, then live."""
    await server.create_channel("feed")
    await _publish(server, "feed", 600)  # ~2 MB of history: dozens of pages
    reader, writer, _session = await _stalled_subscriber(server, since=0)
    ordering = server.app[keys.DELIVERY]
    (recovery,) = ordering._recoveries["feed"]
    held = []
    for batch in range(1, 11):  # 300 live messages, ~900 KB, while the resume waits
        await _publish(server, "feed", 30)
        await eventually(lambda b=batch: ordering.last_position("feed") == 600 + 30 * b)
        held.append(sum(len(m.payload_json) for m in recovery.messages))
    assert recovery.outbox is None  # still reading its history
    assert max(held) <= LIVE_LIMIT, held
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # read on, quickly
    assert await _read_positions(reader, 900) == list(range(1, 901))
    await eventually(lambda: not ordering._recoveries)  # caught up: plain fan-out
    await _publish(server, "feed", 2)
    assert await _read_positions(reader, 902) == [901, 902]
    writer.transport.abort()
