"""A minimal Engine.IO 4 / Socket.IO client over aiohttp's WebSocket, for the tests:
it speaks the packets by hand, so a test sees exactly what the server sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class SioClient:
    ws: aiohttp.ClientWebSocketResponse
    handshake: dict
    inbox: list[str] = field(default_factory=list)  # packets not looked at yet
    next_ack: int = 0

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base: str) -> SioClient:
        ws = await http.ws_connect(base + "/socket.io/?EIO=4&transport=websocket")
        first = await ws.receive_str(timeout=5)
        assert first.startswith("0"), first
        return cls(ws, json.loads(first[1:]))

    async def connect(self, auth: dict | None) -> str:
        """Send CONNECT; the server's answer packet (40{sid} or 44{message})."""
        await self.ws.send_str("40" + (json.dumps(auth) if auth is not None else ""))
        return await self.packet(lambda p: p.startswith(("40", "44")))

    async def packet(self, match: Any = lambda p: True, timeout: float = 5.0) -> str:
        for i, kept in enumerate(self.inbox):
            if match(kept):
                return self.inbox.pop(i)
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"expected a text frame, got {msg.type}: {msg.data!r}")
            if msg.data == "2":  # the server's ping
                await self.ws.send_str("3")
                continue
            if match(msg.data):
                return msg.data
            self.inbox.append(msg.data)

    async def emit(self, name: str, data: Any, ack: bool = False) -> Any:
        """Emit an event; with `ack`, wait for and return the ack's argument."""
        if not ack:
            await self.ws.send_str("42" + json.dumps([name, data]))
            return None
        self.next_ack += 1
        ack_id = str(self.next_ack)
        await self.ws.send_str("42" + ack_id + json.dumps([name, data]))
        packet = await self.packet(lambda p: p.startswith("43" + ack_id + "["))
        return json.loads(packet[2 + len(ack_id) :])[0]

    async def event(self, name: str, timeout: float = 5.0) -> Any:
        """The data of the next event called `name` (others are kept)."""
        prefix = "42" + json.dumps([name])[:-1] + ","
        packet = await self.packet(lambda p: p.startswith(prefix), timeout)
        return json.loads(packet[2:])[1]

    async def close(self) -> None:
        await self.ws.close()
