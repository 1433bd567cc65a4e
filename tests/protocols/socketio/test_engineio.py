"""Socket.IO v4 / Engine.IO 4 at /socket.io/, packet by packet, with a hand-written
client: the handshake, auth, acks, events, errors, the heartbeat and both directions
with the raw protocol, against a real server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from tests.conftest import API_KEY, Server, make_settings
from tests.protocols.socketio.sio_client import SioClient

from pgrealtime.config import Settings

ANON_KEY = "anon_test_key"


@pytest.fixture
def server_settings() -> Settings:
    return make_settings(anon_key=ANON_KEY)


async def _connected(server: Server, token: str) -> SioClient:
    client = await SioClient.open(server.http, server.base)
    answer = await client.connect({"token": token})
    assert answer.startswith("40"), answer
    return client


async def test_handshake_open_packet_and_connect(server: Server) -> None:
    client = await SioClient.open(server.http, server.base)
    assert client.handshake["upgrades"] == []
    assert client.handshake["pingInterval"] == 5000 and client.handshake["pingTimeout"] == 5000
    assert client.handshake["sid"] and client.handshake["maxPayload"] > 0
    answer = await client.connect({"token": server.token()})
    assert answer.startswith("40") and json.loads(answer[2:])["sid"]


async def test_refused_handshakes_are_connect_errors(server: Server) -> None:
    for auth in (None, {}, {"token": "not-a-jwt"}, {"apiKey": "ik_wrong"}):
        client = await SioClient.open(server.http, server.base)
        answer = await client.connect(auth)
        assert answer.startswith("44"), (auth, answer)
        error = json.loads(answer[2:])
        assert error["message"] and error["data"]["code"], error
        # nothing is served before a CONNECT is accepted
        reply = await client.emit("realtime:subscribe", {"channel": "room:1"}, ack=True)
        assert reply["ok"] is False and reply["error"]["code"] == "NOT_AUTHENTICATED"


async def test_api_key_anon_key_and_api_key_field_connect(server: Server) -> None:
    await server.create_channel("ops:*")
    for auth in ({"token": API_KEY}, {"apiKey": API_KEY}):
        client = await SioClient.open(server.http, server.base)
        assert (await client.connect(auth)).startswith("40")
        ack = await client.emit("realtime:subscribe", {"channel": "ops:1"}, ack=True)
        assert ack["ok"] is True
    anon = await _connected(server, ANON_KEY)
    ack = await anon.emit("realtime:subscribe", {"channel": "ops:1"}, ack=True)
    assert ack["ok"] is False and ack["error"]["code"] == "REALTIME_UNAUTHORIZED"


async def test_anon_key_is_the_anon_role_on_the_raw_protocol_too(server: Server) -> None:
    await server.create_channel("public:*")
    raw = await server.connect()
    reply = await raw.auth(ANON_KEY)
    assert reply["type"] == "auth_success" and reply["userId"] is None
    await server.db.execute(
        "CREATE POLICY anon_public ON realtime.channels FOR SELECT TO anon"
        " USING (pattern = 'public:*')"
    )
    assert (await raw.subscribe("public:1"))["type"] == "subscribed"
    assert (await raw.auth("anon_wrong"))["code"] == "INVALID_TOKEN"


async def test_subscribe_publish_receive_with_meta(server: Server) -> None:
    await server.create_channel("chat:*")
    user = str(uuid.uuid4())
    alice = await _connected(server, server.token(sub=user))
    bob = await _connected(server, server.token())
    for client in (alice, bob):
        ack = await client.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
        assert ack["ok"] is True and ack["channel"] == "chat:1"
        assert ack["presence"] == {"members": []} or "members" in ack["presence"]
    published = await alice.emit(
        "realtime:publish",
        {"channel": "chat:1", "event": "said", "payload": {"text": "hi"}},
        ack=True,
    )
    assert published["ok"] is True and published["position"] == 1
    for client in (alice, bob):
        data = await client.event("said")
        assert data["text"] == "hi"
        assert data["meta"] == {
            "channel": "realtime:chat:1",
            "messageId": published["messageId"],
            "senderType": "user",
            "senderId": user,
            "timestamp": data["meta"]["timestamp"],
            "position": 1,
        }


async def test_refusals_without_an_ack_are_realtime_error_events(server: Server) -> None:
    await server.create_channel("chat:*")
    client = await _connected(server, server.token())
    await client.emit("realtime:publish", {"channel": "chat:1", "event": "e", "payload": {}})
    error = await client.event("realtime:error")
    assert error == {
        "channel": "chat:1",
        "code": "REALTIME_NOT_SUBSCRIBED",
        "message": "Must subscribe to channel before publishing messages",
    }
    await client.emit("realtime:nonsense", {})
    assert (await client.event("realtime:error"))["code"] == "UNKNOWN_TYPE"
    denied = await client.emit("realtime:subscribe", {"channel": "nochannel"}, ack=True)
    assert denied == {
        "ok": False,
        "channel": "nochannel",
        "error": {
            "code": "REALTIME_CHANNEL_NOT_FOUND",
            "message": "No enabled channel matches 'nochannel'",
        },
    }


@pytest.mark.parametrize(
    "event",
    [
        "realtime:error",
        "presence:join",
        "presence:leave",
        "connect",
        "disconnect",
        "connect_error",
    ],
)
async def test_forged_system_event_names_are_refused_on_both_protocols(
    server: Server, event: str
) -> None:
    await server.create_channel("chat:*")
    client = await _connected(server, server.token())
    await client.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
    ack = await client.emit(
        "realtime:publish", {"channel": "chat:1", "event": event, "payload": {}}, ack=True
    )
    assert ack["ok"] is False and ack["error"]["code"] == "INVALID_EVENT_NAME", ack
    raw = await server.connect(server.token())
    await raw.subscribe("chat:1")
    reply = await raw.publish("chat:1", event, {})
    assert reply["type"] == "error" and reply["code"] == "INVALID_EVENT_NAME", reply


async def test_unsubscribe_stops_delivery_at_once(server: Server) -> None:
    await server.create_channel("chat:*")
    listener = await _connected(server, server.token())
    talker = await server.connect(server.token())
    await talker.subscribe("chat:1")
    await listener.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
    await talker.publish("chat:1", "one", {"n": 1})
    assert (await listener.event("one"))["n"] == 1
    await listener.emit("realtime:unsubscribe", {"channel": "chat:1"})
    # an acked event after it: the server has handled the unsubscribe by its answer
    await listener.emit("realtime:subscribe", {"channel": "chat:2"}, ack=True)
    await talker.publish("chat:1", "two", {"n": 2})
    await talker.publish("chat:2", "marker", {})
    with pytest.raises(TimeoutError):
        await listener.event("two", timeout=0.5)


async def test_raw_and_socketio_clients_exchange_both_ways(server: Server) -> None:
    await server.create_channel("mix:*")
    sio = await _connected(server, server.token())
    raw = await server.connect(server.token())
    await sio.emit("realtime:subscribe", {"channel": "mix:1"}, ack=True)
    await raw.subscribe("mix:1")
    published = await raw.publish("mix:1", "from_raw", {"a": 1})
    data = await sio.event("from_raw")
    assert data["a"] == 1 and data["meta"]["messageId"] == published["messageId"]
    await sio.emit(
        "realtime:publish", {"channel": "mix:1", "event": "from_sio", "payload": {"b": 2}}
    )
    message = await raw.expect("message", event="from_sio")
    assert message["payload"] == {"b": 2} and message["channel"] == "mix:1"
    await server.db.execute("SELECT realtime.publish('mix:1', 'from_sql', '{\"c\": 3}')")
    assert (await sio.event("from_sql"))["c"] == 3
    # the audience count is the same whichever protocol the subscribers speak
    for _ in range(100):
        count = await server.db.fetchval(
            "SELECT ws_audience_count FROM realtime.messages WHERE id = $1::uuid",
            published["messageId"],
        )
        if count == 2:
            break
        await asyncio.sleep(0.05)
    assert count == 2


async def test_long_polling_is_refused_clearly(server: Server) -> None:
    async with server.http.get(server.base + "/socket.io/?EIO=4&transport=polling") as resp:
        assert resp.status == 400
        body = await resp.json()
        assert "long-polling is not supported" in body["message"], body


async def test_token_expiry_ends_the_socket_with_a_reason(server: Server) -> None:
    await server.create_channel("chat:*")
    client = await _connected(server, server.token(expires_in=2))  # exp is whole seconds
    await client.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
    error = await client.event("realtime:error", timeout=5)
    assert error["code"] == "TOKEN_EXPIRED"
    assert await client.packet(lambda p: p == "41", timeout=5) == "41"  # server disconnect


async def test_a_disabled_channel_ends_the_subscription(server: Server) -> None:
    channel = await server.create_channel("chat:*")
    client = await _connected(server, server.token())
    await client.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
    status, _ = await server.api(
        "PUT", f"/api/realtime/channels/{channel['id']}", json={"enabled": False}
    )
    assert status == 200
    error = await client.event("realtime:error")
    assert error["channel"] == "chat:1" and error["code"] == "REALTIME_SUBSCRIPTION_ENDED"


async def test_malformed_and_binary_packets_are_refused_and_the_socket_lives(
    server: Server,
) -> None:
    await server.create_channel("chat:*")
    client = await _connected(server, server.token())
    for bad in ("42[", '42/admin,["x"]', "9"):
        await client.ws.send_str(bad)
        error = await client.event("realtime:error")
        assert error["code"] == "MALFORMED_FRAME", (bad, error)
    await client.ws.send_bytes(b"\x01\x02")
    error = await client.event("realtime:error")
    assert error["code"] == "MALFORMED_FRAME" and "binary" in error["message"]
    ack = await client.emit("realtime:subscribe", {"channel": "chat:1"}, ack=True)
    assert ack["ok"] is True


async def test_subscribe_with_since_resumes_over_socketio(server: Server) -> None:
    await server.create_channel("chat:*")
    for n in range(3):
        await server.db.execute(f"SELECT realtime.publish('chat:1', 'past', '{{\"n\": {n}}}')")
    client = await _connected(server, server.token())
    ack = await client.emit("realtime:subscribe", {"channel": "chat:1", "since": 1}, ack=True)
    assert ack["ok"] is True and ack["recovered"] is True and ack["missed"] == 2
    assert [(await client.event("past"))["n"] for _ in range(2)] == [1, 2]
