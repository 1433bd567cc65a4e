"""Application RLS policies decide who may subscribe and publish (InsForge's examples)."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Server

from pgrealtime import keys
from pgrealtime.client import ServerError, connect

SCHEMA = """
CREATE TABLE public.orders (id uuid PRIMARY KEY, user_id uuid NOT NULL);
GRANT SELECT ON public.orders TO authenticated;
CREATE TABLE public.chat_members (room_id uuid, user_id uuid);
GRANT SELECT ON public.chat_members TO authenticated;
DROP POLICY allow_authenticated_subscribe ON realtime.channels;
DROP POLICY allow_authenticated_publish ON realtime.messages;
CREATE POLICY users_subscribe_own_orders ON realtime.channels FOR SELECT TO authenticated
  USING (pattern = 'order:%' AND EXISTS (
    SELECT 1 FROM orders
    WHERE id = NULLIF(split_part(realtime.channel_name(), ':', 2), '')::uuid
      AND user_id = auth.uid()));
CREATE POLICY members_subscribe_chat ON realtime.channels FOR SELECT TO authenticated
  USING (pattern = 'chat:%');
CREATE POLICY members_publish_chat ON realtime.messages FOR INSERT TO authenticated
  WITH CHECK (channel_name LIKE 'chat:%' AND EXISTS (
    SELECT 1 FROM chat_members
    WHERE room_id = NULLIF(split_part(channel_name, ':', 2), '')::uuid
      AND user_id = auth.uid()));
"""


async def test_users_subscribe_only_to_orders_they_own(server: Server) -> None:
    await server.db.execute(SCHEMA)
    await server.create_channel("order:%")  # InsForge's wildcard, as its policies expect
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    order = str(uuid.uuid4())
    await server.db.execute("INSERT INTO orders VALUES ($1, $2)", uuid.UUID(order),
                            uuid.UUID(alice))  # fmt: skip

    async with (
        connect(server.base, token=server.token(sub=alice)) as a,
        connect(server.base, token=server.token(sub=bob)) as b,
    ):
        await a.subscribe(f"order:{order}")
        with pytest.raises(ServerError) as denied:
            await b.subscribe(f"order:{order}")
        assert denied.value.code == "REALTIME_UNAUTHORIZED"
        assert denied.value.message == "Not authorized to subscribe to this channel"
        # someone else's order, and a malformed id in the name: refusals, not crashes
        for name in (f"order:{uuid.uuid4()}", "order:not-a-uuid"):
            with pytest.raises(ServerError) as denied:
                await a.subscribe(name)
            assert denied.value.code == "REALTIME_UNAUTHORIZED"


async def test_only_room_members_may_publish(server: Server) -> None:
    await server.db.execute(SCHEMA)
    await server.create_channel("chat:%")
    member, outsider = str(uuid.uuid4()), str(uuid.uuid4())
    room = str(uuid.uuid4())
    await server.db.execute("INSERT INTO chat_members VALUES ($1, $2)", uuid.UUID(room),
                            uuid.UUID(member))  # fmt: skip
    m = await server.connect(server.token(sub=member))
    o = await server.connect(server.token(sub=outsider))
    await m.subscribe(f"chat:{room}")
    await o.subscribe(f"chat:{room}")
    refused = await o.publish(f"chat:{room}", "said", {"text": "let me in"})
    assert refused["code"] == "REALTIME_UNAUTHORIZED"
    # a name on which the policy itself fails is refused alone, in the same batch as others
    await server.db.execute("DROP POLICY users_subscribe_own_orders ON realtime.channels")
    assert (await m.subscribe("chat:not-a-uuid"))["type"] == "subscribed"
    await m.send({"type": "publish", "channel": "chat:not-a-uuid", "event": "e", "payload": {},
                  "id": "bad"})  # fmt: skip
    assert (await m.expect("error", code="REALTIME_UNAUTHORIZED"))["id"] == "bad"
    accepted = await m.publish(f"chat:{room}", "said", {"text": "hello"})
    assert accepted["type"] == "published"
    for client in (m, o):  # subscribers who may not publish still receive
        assert (await client.expect("message"))["messageId"] == accepted["messageId"]
    stored = await server.db.fetchval("SELECT count(*) FROM realtime.messages")
    assert stored == 1


async def test_most_specific_channel_governs(server: Server) -> None:
    broad = await server.create_channel("team:*")
    narrow = await server.create_channel("team:red:*")
    exact = await server.create_channel("team:red:lead")
    await server.db.execute(
        "CREATE POLICY exact_only_admins ON realtime.channels AS RESTRICTIVE FOR SELECT"
        " TO authenticated USING (pattern <> 'team:red:lead')"
    )
    client = await server.connect(server.token())
    sub = await client.subscribe("team:red:1")
    assert sub["type"] == "subscribed"
    published = await client.publish("team:red:1", "e", {})
    channel_id = await server.db.fetchval(
        "SELECT channel_id FROM realtime.messages WHERE id = $1", uuid.UUID(published["messageId"])
    )
    assert str(channel_id) == narrow["id"] != broad["id"]
    # the exact channel governs team:red:lead and its policy refuses, though team:* allows
    assert (await client.subscribe("team:red:lead"))["code"] == "REALTIME_UNAUTHORIZED"
    assert exact["pattern"] == "team:red:lead"


async def test_subscribe_checks_in_one_batch_are_each_their_callers_own(server: Server) -> None:
    """Many subscribes at once share round trips, yet each is checked under its own
    caller's claims: owners get in, everyone else is refused, whatever the mix."""
    import asyncio

    await server.db.execute(SCHEMA)
    await server.create_channel("order:%")
    users = [str(uuid.uuid4()) for _ in range(40)]
    orders = [str(uuid.uuid4()) for _ in users]
    await server.db.executemany(
        "INSERT INTO orders VALUES ($1, $2)",
        [(uuid.UUID(o), uuid.UUID(u)) for o, u in zip(orders, users, strict=True)],
    )
    clients = [await server.connect(server.token(sub=u)) for u in users]
    checks = server.app[keys.SESSION_CONTEXT].subscribe_checks
    before = checks.round_trips
    # client i asks for its own order when i is even, for its neighbour's when odd
    wanted = [orders[i] if i % 2 == 0 else orders[(i + 1) % len(orders)] for i in range(40)]
    replies = await asyncio.gather(
        *(c.subscribe(f"order:{o}") for c, o in zip(clients, wanted, strict=True))
    )
    for i, reply in enumerate(replies):
        expected = "subscribed" if i % 2 == 0 else "error"
        assert reply["type"] == expected, (i, reply)
    assert checks.round_trips - before < len(clients)  # batched
