"""A lean RFC 6455 client on a bare asyncio Protocol, for receivers under load.

Why not the aiohttp client everywhere: on one core its per-message path (queue,
task wake-up, `async for`) tops out near 30-40k received frames/s, so the load
generator, not the server, would set the ceiling of a fan-out test. Here frames
are cut out of each TCP read in a loop and handed to a callback, with no task
switch per message. It does what the benchmark needs and nothing more: text
frames, fragments, ping/pong, close; no extensions (no compression offered).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeError(ConnectionError):
    pass


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, as one big-integer operation (no per-byte loop)."""
    n = len(payload)
    if not n:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    key = os.urandom(4)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + key + mask_payload(payload, key)


class FastWebSocket(asyncio.Protocol):
    """Client side of one WebSocket; `on_text(bytes)` gets every text message."""

    def __init__(self, on_text: Callable[[bytes], None], on_close: Callable[[], None]) -> None:
        self.on_text = on_text
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = b""
        self._handshake: asyncio.Future[None] | None = None
        self._key = ""
        self._fragments: list[bytes] | None = None
        self._closed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if self._handshake is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            self._finish_handshake(buf[:end])
            buf = buf[end + 4 :]
        pos, n = 0, len(buf)
        on_text = self.on_text
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:  # servers must not mask; tolerate it anyway
                head += 4
            end = pos + head + length
            if end > n:
                break
            payload = buf[pos + head : end]
            if b1 & 0x80:
                payload = mask_payload(payload, buf[pos + head - 4 : pos + head])
            pos = end
            opcode = b0 & 0x0F
            if opcode == OP_TEXT and b0 & 0x80:
                on_text(payload)
            elif opcode in (OP_TEXT, OP_BINARY):
                self._fragments = [payload]
            elif opcode == OP_CONT and self._fragments is not None:
                self._fragments.append(payload)
                if b0 & 0x80:
                    whole, self._fragments = b"".join(self._fragments), None
                    on_text(whole)
            elif opcode == OP_PING:
                self._write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self._write(encode_frame(payload[:2], OP_CLOSE))
                if self.transport is not None:
                    self.transport.close()
                break
        self._buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(HandshakeError(f"connection lost: {exc}"))
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
        self.on_close()

    # -- use ------------------------------------------------------------------------
    def start_handshake(self, host: str, port: int, path: str) -> asyncio.Future[None]:
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._handshake = asyncio.get_running_loop().create_future()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self._write(request.encode())
        return self._handshake

    def _finish_handshake(self, head: bytes) -> None:
        fut, self._handshake = self._handshake, None
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(
            hashlib.sha1(self._key.encode() + GUID, usedforsecurity=False).digest()
        ).decode()
        if " 101 " not in lines[0] + " ":
            fut.set_exception(HandshakeError(lines[0]))
        elif headers.get("sec-websocket-accept") != accept:
            fut.set_exception(HandshakeError("bad Sec-WebSocket-Accept"))
        else:
            fut.set_result(None)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_text(self, payload: bytes) -> None:
        if self.closed:
            raise ConnectionError("WebSocket closed")
        self._write(encode_frame(payload))

    async def close(self) -> None:
        if self.closed or self.transport is None:
            return
        self._write(encode_frame((1000).to_bytes(2, "big"), OP_CLOSE))
        try:
            await asyncio.wait_for(asyncio.shield(self._closed_fut), 5)
        except TimeoutError:
            self.transport.abort()


async def connect(
    url: str, on_text: Callable[[bytes], None], on_close: Callable[[], None]
) -> FastWebSocket:
    """Open ws://host:port/path and finish the opening handshake."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError("only ws:// URLs (the benchmark runs on loopback)")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: FastWebSocket(on_text, on_close), host, port)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        await asyncio.wait_for(proto.start_handshake(host, port, path), 30)
    except BaseException:
        if proto.transport is not None:
            proto.transport.abort()
        raise
    return proto
