"""The snapshot with the change feed on: its status and the changes it handed on."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def test_the_snapshot_shows_the_feed_and_counts_changes(server: Server) -> None:
    await server.db.execute(
        "CREATE TABLE public.notes (id int PRIMARY KEY, body text);"
        " GRANT SELECT ON public.notes TO authenticated"
    )
    await server.wait_streaming()
    _, before = await server.api("GET", "/api/realtime/dashboard")
    assert before["changes"]["enabled"] is True
    assert before["changes"]["state"] == "streaming"
    assert "lag_bytes" in before["changes"]  # None until the first standby status
    client = await server.connect(server.token())
    assert (await client.subscribe("db:notes"))["type"] == "subscribed"
    await server.db.execute("INSERT INTO public.notes VALUES (1, 'a'), (2, 'b')")
    for _ in range(2):
        await client.expect("message", timeout=10)
    after = before
    for _ in range(100):
        _, after = await server.api("GET", "/api/realtime/dashboard")
        if after["changesDelivered"] - before["changesDelivered"] == 2:
            break
        await asyncio.sleep(0.05)
    assert after["changesDelivered"] - before["changesDelivered"] == 2
    assert {"name": "db:notes", "subscribers": 1} in after["channels"]
