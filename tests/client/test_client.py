"""The client against a real server: publish/subscribe, acks and typed errors,
history, callbacks, unsubscribe, tokens, a subscription ended by the server, and a
dropped connection resumed."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import API_KEY, Server

from pgrealtime import keys
from pgrealtime.client import (
    AuthenticationError,
    Backoff,
    Message,
    ServerError,
    SubscriptionEnded,
    connect,
)

FAST = Backoff(initial=0.02, maximum=0.2)


async def test_publish_subscribe_and_ack(server: Server) -> None:
    await server.create_channel("order:*")
    async with connect(server.base, token=server.token()) as client:
        assert client.user_id is not None
        sub = await client.subscribe("order:123")
        ack = await client.publish("order:123", "order.updated", {"status": "shipped"})
        assert ack.channel == "order:123" and ack.event == "order.updated"
        assert ack.position == 1 and len(ack.message_id) == 36
        message = await sub.get(timeout=5)
        assert isinstance(message, Message)
        assert (message.message_id, message.position) == (ack.message_id, 1)
        assert message.payload == {"status": "shipped"}
        assert message.sender_id == client.user_id and message.sender_type == "user"


async def test_refusals_raise_the_servers_code(server: Server) -> None:
    await server.create_channel("order:*")
    async with connect(server.base, token=server.token()) as client:
        with pytest.raises(ServerError) as refused:
            await client.publish("order:1", "e", {})
        assert refused.value.code == "REALTIME_NOT_SUBSCRIBED"
        await client.subscribe("order:1")
        with pytest.raises(ServerError) as refused:
            await client.publish("order:1", "e", [1, 2])
        assert refused.value.code == "INVALID_PAYLOAD"
        with pytest.raises(ServerError) as refused:
            await client.subscribe("nothing:here")
        assert refused.value.code == "REALTIME_CHANNEL_NOT_FOUND"
        assert client.subscription("nothing:here") is None
        await client.ping()  # the connection lives on after refusals


async def test_a_refused_token_raises_at_connect(server: Server) -> None:
    with pytest.raises(AuthenticationError) as refused:
        async with connect(server.base, token="not-a-jwt"):
            pass
    assert refused.value.code == "INVALID_TOKEN"


async def test_history_with_since_then_live(server: Server) -> None:
    await server.create_channel("log")
    async with connect(server.base, token=API_KEY) as writer:
        await writer.subscribe("log")
        for i in range(5):
            await writer.publish("log", "line", {"i": i})
        async with connect(server.base, token=server.token()) as reader:
            sub = await reader.subscribe("log", since=2)
            await writer.publish("log", "line", {"i": 5})
            got = [(await sub.get(timeout=5)).position for _ in range(4)]
            assert got == [3, 4, 5, 6]


async def test_callback_and_unsubscribe(server: Server) -> None:
    await server.create_channel("room:*")
    seen: list[str] = []
    done = asyncio.Event()

    async def on_message(message: Message) -> None:
        seen.append(message.event)
        if len(seen) == 2:
            done.set()

    async with connect(server.base, token=server.token()) as client:
        sub = await client.subscribe("room:1", on_message=on_message)
        await client.publish("room:1", "a", {})
        await client.publish("room:1", "b", {})
        await asyncio.wait_for(done.wait(), 5)
        assert seen == ["a", "b"]
        await sub.unsubscribe()
        assert not sub.active and client.subscription("room:1") is None
        with pytest.raises(ServerError) as refused:
            await client.publish("room:1", "c", {})
        assert refused.value.code == "REALTIME_NOT_SUBSCRIBED"


async def test_iteration_stops_after_unsubscribe(server: Server) -> None:
    await server.create_channel("room:*")
    async with connect(server.base, token=server.token()) as client:
        sub = await client.subscribe("room:2")
        await client.publish("room:2", "a", {})
        await asyncio.sleep(0.2)
        await sub.unsubscribe()
        assert [m.event async for m in sub] == ["a"]


async def test_channel_deleted_ends_the_subscription(server: Server) -> None:
    channel = await server.create_channel("game:*")
    async with connect(server.base, token=server.token()) as client:
        sub = await client.subscribe("game:1")
        status, _ = await server.api("DELETE", f"/api/realtime/channels/{channel['id']}")
        assert status in (200, 204)
        with pytest.raises(SubscriptionEnded) as ended:
            await sub.get(timeout=5)
        assert ended.value.code == "REALTIME_SUBSCRIPTION_ENDED"
        assert client.subscription("game:1") is None


async def test_dropped_connection_resumes_without_gap(server: Server) -> None:
    """The server drops the connection (as a slow-consumer cut or a network fault
    would): messages published meanwhile arrive once, in order, after the resume."""
    await server.create_channel("feed")
    async with (
        connect(server.base, token=API_KEY) as writer,
        connect(server.base, token=server.token(), backoff=FAST) as reader,
    ):
        await writer.subscribe("feed")
        sub = await reader.subscribe("feed")
        await writer.publish("feed", "m", {"i": 1})
        assert (await sub.get(timeout=5)).position == 1
        reader._ws._writer.transport.abort()  # the TCP connection dies under the client
        for i in range(2, 6):
            await writer.publish("feed", "m", {"i": i})
        got = [(await sub.get(timeout=10)).position for _ in range(4)]
        assert got == [2, 3, 4, 5]
        assert reader.reconnects == 1
        hub = server.app[keys.HUB]
        assert hub.subscriber_count("feed") == 2
