"""Finding 10: a resume that fails for an unexpected reason leaves no Recovery
behind (it would collect every later message of its channel for the life of the
process)."""

from __future__ import annotations

import pytest
from tests.conftest import Server, make_settings

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(send_buffer_bytes=64 * 1024)


async def _publish(server: Server, count: int) -> None:
    await server.db.execute(
        "SELECT realtime.publish('feed', 'e', jsonb_build_object('blob', repeat('z', 3000)))"
        " FROM generate_series(1, $1)",
        count,
    )


async def test_a_failed_history_read_ends_the_recovery(server: Server) -> None:
    await server.create_channel("feed")
    await _publish(server, 3)
    client = await server.connect(server.token())
    await server.db.execute("ALTER TABLE realtime.messages RENAME TO messages_gone")
    try:
        reply = await client.request({"type": "subscribe", "channel": "feed", "since": 0})
    finally:
        await server.db.execute("ALTER TABLE realtime.messages_gone RENAME TO messages")
    assert reply["type"] == "error" and reply["code"] == "INTERNAL_ERROR"
    assert server.app[keys.DELIVERY]._recoveries == {}
    assert (await client.request({"type": "ping"}))["type"] == "pong"  # the connection lives
