"""Per-channel positions and resuming a subscription with `since`: history first, then
live messages, with no gap and no duplicate at the seam."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Client, Server, make_settings

from pgrealtime import keys
from pgrealtime.config import Settings


@pytest.fixture
def server_settings() -> Settings:
    return make_settings(max_recover=600)


async def _messages(client: Client, count: int, timeout: float = 10.0) -> list[dict]:
    return [await client.expect("message", timeout=timeout) for _ in range(count)]


async def _sql_publish(server: Server, channel: str, count: int, start: int = 0) -> None:
    await server.db.execute(
        "SELECT realtime.publish($1, 'tick', jsonb_build_object('n', n))"
        " FROM generate_series($2::int, $3::int) AS n",
        channel,
        start,
        start + count - 1,
    )


async def test_positions_count_per_channel_name_from_every_writer(server: Server) -> None:
    await server.create_channel("room:*")
    alice = await server.connect(server.token())
    await alice.subscribe("room:a")
    await alice.subscribe("room:b")
    first = await alice.publish("room:a", "e", {})
    await _sql_publish(server, "room:a", 2)
    other = await alice.publish("room:b", "e", {})
    last = await alice.publish("room:a", "e", {})
    assert (first["position"], other["position"], last["position"]) == (1, 1, 4)
    received = [(m["channel"], m["position"]) for m in await _messages(alice, 5)]
    assert [p for c, p in received if c == "room:a"] == [1, 2, 3, 4]
    assert [p for c, p in received if c == "room:b"] == [1]
    status, history = await server.api("GET", "/api/realtime/messages")
    assert status == 200
    assert sorted((m["channelName"], m["position"]) for m in history) == [
        ("room:a", 1), ("room:a", 2), ("room:a", 3), ("room:a", 4), ("room:b", 1)
    ]  # fmt: skip


async def test_resume_after_500_missed_messages(server: Server) -> None:
    await server.create_channel("feed")
    token = server.token()
    reader = await server.connect(token)
    await reader.subscribe("feed")
    await _sql_publish(server, "feed", 3)
    seen = await _messages(reader, 3)
    last_seen = seen[-1]["position"]
    await reader.close()

    await _sql_publish(server, "feed", 500, start=3)
    back = await server.connect(token)
    reply = await back.request({"type": "subscribe", "channel": "feed", "since": last_seen})
    assert reply["type"] == "subscribed"
    assert reply["recovered"] is True and reply["missed"] == 500
    assert reply["position"] == 503
    missed = await _messages(back, 500)
    assert [m["position"] for m in missed] == list(range(4, 504))
    assert [m["payload"]["n"] for m in missed] == list(range(3, 503))

    await _sql_publish(server, "feed", 2, start=503)  # then live ones, in order
    live = await _messages(back, 2)
    assert [m["position"] for m in live] == [504, 505]
    with pytest.raises(asyncio.TimeoutError):
        await back.expect("message", timeout=0.3)


async def test_resume_from_a_message_id(server: Server) -> None:
    await server.create_channel("feed")
    token = server.token()
    reader = await server.connect(token)
    await reader.subscribe("feed")
    published = await reader.publish("feed", "e", {"n": 0})
    await reader.close()
    await _sql_publish(server, "feed", 4, start=1)
    back = await server.connect(token)
    reply = await back.request(
        {"type": "subscribe", "channel": "feed", "since": published["messageId"]}
    )
    assert reply["recovered"] is True and reply["missed"] == 4
    assert [m["payload"]["n"] for m in await _messages(back, 4)] == [1, 2, 3, 4]


async def test_resume_past_retention_says_not_recovered(server: Server) -> None:
    await server.create_channel("feed")
    await _sql_publish(server, "feed", 10)
    await server.db.execute("DELETE FROM realtime.messages WHERE position <= 5")
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": 2})
    assert reply["recovered"] is False and reply["missed"] == 5
    assert [m["position"] for m in await _messages(client, 5)] == [6, 7, 8, 9, 10]

    gone = await server.connect(server.token())
    unknown = "00000000-0000-4000-8000-000000000000"
    reply = await gone.request({"type": "subscribe", "channel": "feed", "since": unknown})
    assert reply["recovered"] is False and reply["missed"] == 0 and reply["position"] == 10


async def test_resume_beyond_the_limit_sends_the_newest(server: Server) -> None:
    await server.create_channel("feed")
    await _sql_publish(server, "feed", 700)
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": 0})
    assert reply["recovered"] is False and reply["missed"] == 600
    assert [m["position"] for m in await _messages(client, 600)] == list(range(101, 701))


async def test_nothing_missed_is_recovered(server: Server) -> None:
    await server.create_channel("feed")
    await _sql_publish(server, "feed", 3)
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": 3})
    assert reply["recovered"] is True and reply["missed"] == 0 and reply["position"] == 3
    future = await client.request({"type": "subscribe", "channel": "other", "since": 0})
    assert future["type"] == "error"  # no channel 'other': refused before any history


async def test_resume_while_messages_keep_coming_has_no_gap_or_duplicate(server: Server) -> None:
    await server.create_channel("busy")
    token = server.token()
    writer = await server.connect(token)
    await writer.subscribe("busy")
    stop = asyncio.Event()

    async def publish_forever() -> int:
        n = 0
        while not stop.is_set() and n < 400:  # stays under max_recover (600)
            await _sql_publish(server, "busy", 5, start=n)
            n += 5
            reply = await writer.publish("busy", "ws", {"n": n})
            assert reply["type"] == "published"
        return n

    task = asyncio.create_task(publish_forever())
    await asyncio.sleep(0.3)
    resumers = []
    for since in (0, 5, 20):  # resume while the writers are busy
        client = await server.connect(token)
        reply = await client.request({"type": "subscribe", "channel": "busy", "since": since})
        assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
        resumers.append((client, since))
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    final = await server.db.fetchval(
        "SELECT position FROM realtime.channel_positions WHERE channel_name = 'busy'"
    )
    for client, since in resumers:
        positions = [m["position"] for m in await _messages(client, final - since)]
        assert positions == list(range(since + 1, final + 1))
        with pytest.raises(asyncio.TimeoutError):
            await client.expect("message", timeout=0.2)


async def test_a_lost_notification_is_filled_from_the_table_in_order(server: Server) -> None:
    """A message whose NOTIFY never came (here: the trigger switched off for it) is
    read back when the next position shows the gap, and handed out first."""
    await server.create_channel("feed")
    client = await server.connect(server.token())
    await client.subscribe("feed")
    await _sql_publish(server, "feed", 1)
    assert (await client.expect("message"))["position"] == 1
    async with server.db.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE realtime.messages DISABLE TRIGGER messages_notify")
        await conn.execute("SELECT realtime.publish('feed', 'quiet', '{}')")
        await conn.execute("ALTER TABLE realtime.messages ENABLE TRIGGER messages_notify")
    await _sql_publish(server, "feed", 1)
    received = await _messages(client, 2)
    assert [(m["position"], m["event"]) for m in received] == [(2, "quiet"), (3, "tick")]
    assert server.app[keys.DELIVERY].gaps_filled == 1


@pytest.mark.parametrize(
    "since", [-1, "yesterday", 1.5, True, {"position": 1}, 2**63, "not-a-uuid"]
)
async def test_bad_since_values_are_refused(server: Server, since: object) -> None:
    await server.create_channel("feed")
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "feed", "since": since})
    assert reply["type"] == "error", reply
    assert reply["code"] in ("INVALID_SINCE", "MALFORMED_FRAME"), reply
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    ok = await client.request({"type": "subscribe", "channel": "feed", "since": 0})
    assert ok["type"] == "subscribed"


async def test_since_on_a_db_channel_is_refused(server: Server) -> None:
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": "db:posts", "since": 0})
    assert reply["code"] == "INVALID_SINCE", reply
