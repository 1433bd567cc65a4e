"""A reader that stops reading shows in the send-buffer gauge, then in the slow-reader
disconnect counter once the hub cuts it (the stalled client of finding 3)."""

from __future__ import annotations

import pytest
from tests.conftest import Server, eventually, make_settings
from tests.metrics.test_metrics import scrape
from tests.security.test_03_slow_reader_cut import (
    LIMIT,
    _publish,
    _server_side,
    _stalled_subscriber,
)

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(send_buffer_bytes=LIMIT, heartbeat_seconds=0)


async def test_held_bytes_then_a_counted_cut(server: Server) -> None:
    await server.create_channel("flood:*")
    writer = await _stalled_subscriber(server, "flood:1")
    transport = _server_side(server)
    server.app[keys.HUB].sweep_seconds = 3600  # only the hard cap cuts here
    delivery = server.app[keys.DELIVERY]
    for sent in range(1, 200):  # one message at a time until the kernel's buffers are full
        await _publish(server, "flood:1", 1, 3500)
        await eventually(lambda sent=sent: delivery.delivered >= sent, timeout=10)
        if transport.get_write_buffer_size() > 0:
            break
    assert 0 < transport.get_write_buffer_size() < LIMIT  # held, not cut
    held = await scrape(server)
    assert held["pgrealtime_send_buffer_bytes"] > 0
    assert held['pgrealtime_disconnects_total{reason="slow_reader"}'] == 0

    await _publish(server, "flood:1", 400, 3500)  # far past twice the limit: cut
    sessions = server.app[keys.SESSIONS].live
    await eventually(lambda: not sessions, timeout=10)
    after = await scrape(server)
    assert after['pgrealtime_disconnects_total{reason="slow_reader"}'] == 1
    assert after["pgrealtime_send_buffer_bytes"] == 0
    writer.close()
