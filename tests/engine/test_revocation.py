"""Channel changes made outside this process's REST API (SQL, another server process)
still end the subscriptions they affect, with a frame that says why."""

from __future__ import annotations

from tests.conftest import Server, eventually

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


async def test_a_change_made_through_rest_is_re_checked_once(server: Server) -> None:
    """The REST handler re-checks before answering; the NOTIFY of its own change names
    this process (its origin) and is skipped. A change made in SQL still wakes it."""
    listener = server.app[keys.LISTENER]
    await listener.connected.wait()
    requested: list[None] = []
    revalidate = listener.on_channels_changed
    assert revalidate is not None

    def counting() -> None:
        requested.append(None)
        revalidate()

    listener.on_channels_changed = counting
    ignored = listener.ignored
    await server.create_channel("game:*")  # REST: re-checked in the handler
    await server.db.execute("UPDATE realtime.channels SET description = 'x'")  # SQL
    # notifications are handled in the order they were sent: once this marker (a
    # message NOTIFY naming no message) is counted, both channel changes were heard
    await server.db.execute("SELECT pg_notify('realtime_message', 'marker')")
    await eventually(lambda: listener.ignored > ignored)
    assert len(requested) == 1  # the SQL change's; the REST one was not re-checked twice
