"""The WebSocket protocol, frame by frame, against a real server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest
from tests.conftest import Server, eventually

from pgrealtime import keys


async def test_auth_subscribe_publish_receive(server: Server) -> None:
    await server.create_channel("order:*")
    user = str(uuid.uuid4())
    alice = await server.connect()
    reply = await alice.auth(server.token(sub=user))
    assert reply["type"] == "auth_success" and reply["userId"] == user

    sub = await alice.subscribe("order:123")
    assert sub["type"] == "subscribed" and sub["channel"] == "order:123"
    assert sub["subscriptionId"]

    bob = await server.connect(server.token())
    await bob.subscribe("order:123")

    payload = {"orderId": "123", "status": "shipped", "nested": {"n": [1, 2.5, None]}}
    published = await alice.publish("order:123", "order.updated", payload)
    assert published["type"] == "published"
    assert published["channel"] == "order:123" and published["event"] == "order.updated"
    assert published["position"] == 1  # the first message of this channel name
    uuid.UUID(published["messageId"])

    for client in (alice, bob):
        message = await client.expect("message")
        assert message == {
            "type": "message",
            "messageId": published["messageId"],
            "channel": "order:123",
            "event": "order.updated",
            "payload": payload,
            "senderId": user,
            "senderType": "user",
            "timestamp": message["timestamp"],
            "position": 1,
        }
        assert message["timestamp"].endswith("Z")

    row = await server.db.fetchrow(
        "SELECT * FROM realtime.messages WHERE id = $1", uuid.UUID(published["messageId"])
    )
    assert row["sender_type"] == "user" and str(row["sender_id"]) == user
    assert row["channel_name"] == "order:123" and json.loads(row["payload"]) == payload
    for _ in range(50):  # audience counts are written in batches
        count = await server.db.fetchval(
            "SELECT ws_audience_count FROM realtime.messages WHERE id = $1", row["id"]
        )
        if count == 2:
            break
        await asyncio.sleep(0.05)
    assert count == 2


async def test_unsubscribe_stops_delivery(server: Server) -> None:
    await server.create_channel("chat:*")
    a = await server.connect(server.token())
    b = await server.connect(server.token())
    await a.subscribe("chat:1")
    await b.subscribe("chat:1")
    reply = await b.request({"type": "unsubscribe", "channel": "chat:1"})
    assert reply == {"type": "unsubscribed", "channel": "chat:1", "id": reply["id"]}
    await a.publish("chat:1", "said", {"n": 1})
    await a.expect("message")
    # b's next frame is the reply to a ping, not the message it unsubscribed from
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    assert b.inbox == []


async def test_messages_arrive_in_publish_order(server: Server) -> None:
    await server.create_channel("seq:*")
    pub = await server.connect(server.token())
    sub = await server.connect(server.token())
    await pub.subscribe("seq:1")
    await sub.subscribe("seq:1")
    for n in range(200):
        await pub.send({"type": "publish", "channel": "seq:1", "event": "n", "payload": {"n": n}})
    received = [(await sub.expect("message"))["payload"]["n"] for _ in range(200)]
    assert received == list(range(200))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "MALFORMED_FRAME"),
        ("[1, 2]", "MALFORMED_FRAME"),
        ('{"channel": "x"}', "MALFORMED_FRAME"),
        ('{"type": 5}', "MALFORMED_FRAME"),
        ('{"type": "dance"}', "UNKNOWN_TYPE"),
        ('{"type": "subscribe"}', "MALFORMED_FRAME"),
        ('{"type": "subscribe", "channel": 7}', "MALFORMED_FRAME"),
        ('{"type": "auth"}', "MALFORMED_FRAME"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_connection_lives(
    server: Server, frame: str, code: str
) -> None:
    client = await server.connect()
    await client.send(frame)
    error = await client.recv()
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_every_refusal_has_its_own_code(server: Server) -> None:
    await server.create_channel("room:*")
    await server.create_channel("off:*", enabled=False)
    client = await server.connect()

    err = await client.request({"type": "subscribe", "channel": "room:1"})
    assert err["code"] == "NOT_AUTHENTICATED" and err["channel"] == "room:1"

    err = await client.auth("not-a-jwt")
    assert err["type"] == "error" and err["code"] == "INVALID_TOKEN"
    err = await client.auth(server.token(expires_in=-10))
    assert err["code"] == "TOKEN_EXPIRED"
    err = await client.auth("ik_wrong")
    assert err["code"] == "INVALID_API_KEY"

    await client.auth(server.token())
    err = await client.subscribe("nothing:1")
    assert err["code"] == "REALTIME_CHANNEL_NOT_FOUND" and err["channel"] == "nothing:1"
    err = await client.subscribe("off:1")
    assert err["code"] == "REALTIME_CHANNEL_NOT_FOUND"
    err = await client.subscribe("bad channel!")
    assert err["code"] == "INVALID_CHANNEL"

    err = await client.publish("room:1", "e", {})
    assert err["code"] == "REALTIME_NOT_SUBSCRIBED"
    await client.subscribe("room:1")
    for event in ("", "x" * 101, "presence:join", "realtime:error"):
        err = await client.publish("room:1", event, {})
        assert err["code"] == "INVALID_EVENT_NAME", event
    for payload in ([1], "text", 5, None):
        err = await client.request(
            {"type": "publish", "channel": "room:1", "event": "e", "payload": payload}
        )
        assert err["code"] == "INVALID_PAYLOAD"
    ok = await client.publish("room:1", "fine", {"still": "usable"})
    assert ok["type"] == "published"


async def test_anon_can_do_nothing_until_a_policy_allows(server: Server) -> None:
    await server.create_channel("public:*")
    anon = await server.connect()
    reply = await anon.auth(server.token(role="anon"))
    assert reply == {
        "type": "auth_success",
        "userId": None,
        "expiresAt": reply["expiresAt"],
        "id": reply["id"],
    }
    assert reply["expiresAt"] > time.time()
    err = await anon.subscribe("public:1")
    assert err["code"] == "REALTIME_UNAUTHORIZED"
    await server.db.execute(
        "CREATE POLICY anon_public ON realtime.channels FOR SELECT TO anon"
        " USING (pattern = 'public:*')"
    )
    assert (await anon.subscribe("public:1"))["type"] == "subscribed"
    err = await anon.publish("public:1", "e", {})
    assert err["code"] == "REALTIME_UNAUTHORIZED"


async def test_forged_roles_and_algorithms_are_refused(server: Server) -> None:
    import jwt
    from tests.conftest import JWT_SECRET

    client = await server.connect()
    forged = [
        jwt.encode({"sub": str(uuid.uuid4()), "role": "postgres"}, JWT_SECRET, "HS256"),
        jwt.encode({"role": "project_admin"}, "wrong-key-" + "y" * 32, "HS256"),
        jwt.encode({"sub": str(uuid.uuid4())}, None, "none"),
        jwt.encode({"sub": "not-a-uuid"}, JWT_SECRET, "HS256"),
    ]
    for token in forged:
        err = await client.auth(token)
        assert err["type"] == "error" and err["code"] == "INVALID_TOKEN", token


async def test_api_key_and_admin_token_act_as_project_admin(server: Server) -> None:
    await server.create_channel("ops:*")
    from tests.conftest import API_KEY

    for credential in (API_KEY, server.token(role="project_admin")):
        admin = await server.connect(credential)
        assert (await admin.subscribe("ops:1"))["type"] == "subscribed"
        assert (await admin.publish("ops:1", "deploy", {"v": 1}))["type"] == "published"


async def test_sql_publish_reaches_subscribers(server: Server) -> None:
    await server.create_channel("order:*")
    client = await server.connect(server.token())
    await client.subscribe("order:9")
    message_id = await server.db.fetchval(
        "SELECT realtime.publish('order:9', 'order.shipped', '{\"tracking\": \"T1\"}'::jsonb)"
    )
    message = await client.expect("message")
    assert message["messageId"] == str(message_id)
    assert message["senderType"] == "system" and message["senderId"] is None
    assert message["payload"] == {"tracking": "T1"} and message["event"] == "order.shipped"
    assert await server.db.fetchval("SELECT realtime.publish('none:1', 'e', '{}')") is None


async def test_sql_publishes_during_a_listener_outage_are_delivered_once(server: Server) -> None:
    await server.create_channel("order:*")
    client = await server.connect(server.token())
    await client.subscribe("order:1")
    listener = server.app[keys.LISTENER]
    await asyncio.wait_for(listener.connected.wait(), 5)
    await server.db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    )
    ids = [
        str(await server.db.fetchval("SELECT realtime.publish('order:1', 'e', $1::jsonb)",
                                     json.dumps({"n": n})))
        for n in range(20)
    ]  # fmt: skip
    received = [(await client.expect("message", timeout=15))["messageId"] for _ in ids]
    assert received == ids
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert [f for f in client.inbox if f["type"] == "message"] == []  # no duplicates


async def test_a_changed_channel_ends_its_subscriptions(server: Server) -> None:
    channel = await server.create_channel("game:*")
    client = await server.connect(server.token())
    await client.subscribe("game:1")
    status, _ = await server.api(
        "PUT", f"/api/realtime/channels/{channel['id']}", json={"enabled": False}
    )
    assert status == 200
    ended = await client.expect("error")
    assert ended["code"] == "REALTIME_SUBSCRIPTION_ENDED" and ended["channel"] == "game:1"
    err = await client.publish("game:1", "e", {})
    assert err["code"] == "REALTIME_NOT_SUBSCRIBED"


async def test_delete_channel_ends_subscriptions_and_keeps_history(server: Server) -> None:
    channel = await server.create_channel("doc:*")
    client = await server.connect(server.token())
    await client.subscribe("doc:1")
    published = await client.publish("doc:1", "edit", {"v": 1})
    status, body = await server.api("DELETE", f"/api/realtime/channels/{channel['id']}")
    assert (status, body) == (200, {"message": "Channel deleted"})
    ended = await client.expect("error", code="REALTIME_SUBSCRIPTION_ENDED")
    assert ended["channel"] == "doc:1"
    status, history = await server.api("GET", "/api/realtime/messages")
    assert [m["id"] for m in history] == [published["messageId"]]
    assert history[0]["channelId"] is None


async def test_reauth_as_same_user_keeps_subscriptions(server: Server) -> None:
    await server.create_channel("feed:*")
    user = str(uuid.uuid4())
    client = await server.connect(server.token(sub=user))
    await client.subscribe("feed:1")
    assert (await client.auth(server.token(sub=user)))["type"] == "auth_success"
    assert (await client.publish("feed:1", "e", {}))["type"] == "published"
    refused = await client.auth(server.token())  # someone else: refused, nothing changes
    assert refused["code"] == "INVALID_TOKEN" and "another user" in refused["message"]
    assert (await client.publish("feed:1", "e", {}))["type"] == "published"


async def test_expired_token_closes_the_connection(server: Server) -> None:
    await server.create_channel("t:*")
    client = await server.connect(server.token(expires_in=1))
    await client.subscribe("t:1")
    err = await client.expect("error", timeout=5)
    assert err["code"] == "TOKEN_EXPIRED"
    msg = await client.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and client.ws.close_code == 4001


async def test_a_fresh_token_replaces_the_deadline_of_the_old_one(server: Server) -> None:
    """Expiry runs on one process-wide clock: re-authenticating moves the session to
    the new token's deadline, and closed sessions leave nothing on the clock."""
    clock = server.app[keys.SESSION_CONTEXT].expiry
    user = str(uuid.uuid4())
    renewed = await server.connect(server.token(sub=user, expires_in=1))
    doomed = await server.connect(server.token(expires_in=1))
    assert clock.watched() == 2
    assert (await renewed.auth(server.token(sub=user, expires_in=3600)))["type"] == "auth_success"
    assert clock.watched() == 2  # the old deadline's entry left with the re-auth
    err = await doomed.expect("error", timeout=5)
    assert err["code"] == "TOKEN_EXPIRED"
    await asyncio.sleep(0.5)  # the old deadline of `renewed` has passed as well
    assert (await renewed.request({"type": "ping"}))["type"] == "pong"
    await renewed.ws.close()
    await eventually(lambda: clock.watched() == 0)


async def test_a_plain_http_request_to_the_websocket_path_gets_a_json_error(
    server: Server,
) -> None:
    async with server.http.get(server.base + "/realtime") as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"] == "HTTP_ERROR" and "WebSocket" in body["message"]
    async with server.http.post(server.base + "/realtime") as resp:
        assert resp.status == 405 and (await resp.json())["error"] == "METHOD_NOT_ALLOWED"


async def test_an_unexpected_failure_costs_one_frame_not_the_connection(server: Server) -> None:
    """A database that fails a subscribe in a way nobody planned for (here: its batch
    function was dropped) answers INTERNAL_ERROR; the connection keeps working."""
    await server.create_channel("room")
    client = await server.connect(server.token())
    await client.subscribe("room")
    await server.db.execute("ALTER FUNCTION realtime.authorize_subscribe_batch RENAME TO gone")
    reply = await client.subscribe("other")
    assert reply["code"] == "INTERNAL_ERROR", reply
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert (await client.publish("room", "e", {}))["type"] == "published"
