"""The per-connection frame rate holds on Socket.IO as on the raw protocol: every
packet but a pong spends a token, a malformed one too."""

from __future__ import annotations

import pytest
from tests.conftest import Server, make_settings
from tests.protocols.socketio.sio_client import SioClient

from pgrealtime.config import Settings


@pytest.fixture
def server_settings() -> Settings:
    return make_settings(frame_rate=1, frame_burst=3)


async def test_frames_beyond_the_rate_are_refused(server: Server) -> None:
    await server.create_channel("chat:*")
    client = await SioClient.open(server.http, server.base)
    assert (await client.connect({"token": server.token()})).startswith("40")  # 1 token
    for _ in range(2):
        await client.ws.send_str("42[")  # malformed: tokens 2 and 3
        assert (await client.event("realtime:error"))["code"] == "MALFORMED_FRAME"
    ack = await client.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
    assert ack["ok"] is False and ack["error"]["code"] == "RATE_LIMITED"
