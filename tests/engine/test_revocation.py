"""Channel changes made outside this process's REST API (SQL, another server process)
still end the subscriptions they affect, with a frame that says why."""

from __future__ import annotations

from tests.conftest import Server

from pgrealtime import keys


async def test_channel_disabled_in_sql_ends_subscriptions(server: Server) -> None:
    await server.create_channel("game:*")
    await server.create_channel("chat:*")
    client = await server.connect(server.token())
    await client.subscribe("game:1")
    await client.subscribe("chat:1")
    await server.db.execute("UPDATE realtime.channels SET enabled = false WHERE pattern = 'game:*'")
    ended = await client.expect("error", code="REALTIME_SUBSCRIPTION_ENDED")
    assert ended["channel"] == "game:1"
    reply = await client.publish("game:1", "e", {})
    assert reply["code"] == "REALTIME_NOT_SUBSCRIBED"
    assert (await client.publish("chat:1", "e", {}))["type"] == "published"  # untouched


async def test_channel_deleted_in_sql_ends_subscriptions(server: Server) -> None:
    await server.create_channel("game:*")
    client = await server.connect(server.token())
    await client.subscribe("game:7")
    await server.db.execute("DELETE FROM realtime.channels WHERE pattern = 'game:*'")
    ended = await client.expect("error", code="REALTIME_SUBSCRIPTION_ENDED")
    assert ended["channel"] == "game:7"
    assert server.app[keys.HUB].subscriber_count("game:7") == 0
