"""Token refresh over Socket.IO (`realtime:auth {token}` with an ack), the
`realtime:token_expiring` warning, `realtime:presence`, and the Socket.IO share of
/metrics, against a real server with the hand-written client."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from tests.conftest import API_KEY, Server, make_settings
from tests.metrics.test_metrics import scrape
from tests.protocols.socketio.sio_client import SioClient

from pgrealtime.config import Settings


@pytest.fixture
def server_settings() -> Settings:
    return make_settings(token_expiry_warning_seconds=3)


async def _connected(server: Server, token: str) -> SioClient:
    client = await SioClient.open(server.http, server.base)
    answer = await client.connect({"token": token})
    assert answer.startswith("40"), answer
    return client


async def _subscribe(client: SioClient, channel: str) -> dict:
    ack = await client.emit("realtime:subscribe", {"channel": channel}, ack=True)
    assert ack["ok"] is True, ack
    return ack


async def test_refresh_moves_the_expiry_and_keeps_the_subscription(server: Server) -> None:
    await server.create_channel("feed:*")
    user = str(uuid.uuid4())
    client = await _connected(server, server.token(sub=user, expires_in=4))  # warned at 1 s
    await _subscribe(client, "feed:1")
    warning = await client.event("realtime:token_expiring", timeout=5)
    assert set(warning) == {"expiresIn"} and 1 <= warning["expiresIn"] <= 3
    ack = await client.emit("realtime:auth", {"token": server.token(sub=user, expires_in=600)},
                            ack=True)  # fmt: skip
    assert ack["ok"] is True and ack["userId"] == user, ack
    assert ack["expiresAt"] > time.time() + 500
    await asyncio.sleep(3.5)  # past the first token's exp: the refresh moved the cut
    publisher = await server.connect(API_KEY)
    await publisher.subscribe("feed:1")
    await publisher.publish("feed:1", "news", {"n": 1})
    got = await client.event("news")
    assert got["n"] == 1
    assert not [p for p in client.inbox if "realtime:error" in p or p == "41"], client.inbox


async def test_refresh_refusals_are_ok_false_acks(server: Server) -> None:
    await server.create_channel("feed:*")
    user = str(uuid.uuid4())
    client = await _connected(server, server.token(sub=user))
    await _subscribe(client, "feed:1")
    other = await client.emit("realtime:auth", {"token": server.token()}, ack=True)
    assert other["ok"] is False and other["error"]["code"] == "INVALID_TOKEN", other
    assert "another user" in other["error"]["message"] and "channel" not in other
    bad = await client.emit("realtime:auth", {"token": "not.a.token"}, ack=True)
    assert bad["ok"] is False and bad["error"]["code"] == "INVALID_TOKEN", bad
    missing = await client.emit("realtime:auth", {}, ack=True)
    assert missing["ok"] is False and missing["error"]["code"] == "MALFORMED_FRAME", missing
    # the connection keeps its token and its subscription
    again = await client.emit("realtime:subscribe", {"channel": "feed:1"}, ack=True)
    assert again["ok"] is True


async def test_refreshed_claims_a_policy_refuses_end_that_subscription(server: Server) -> None:
    await server.db.execute(
        """
        DROP POLICY allow_authenticated_subscribe ON realtime.channels;
        CREATE POLICY red_team ON realtime.channels FOR SELECT TO authenticated
          USING (pattern <> 'team:*' OR auth.jwt() ->> 'email' = 'red@example.com');
        """
    )
    await server.create_channel("team:*")
    await server.create_channel("open:*")
    user = str(uuid.uuid4())
    client = await _connected(server, server.token(sub=user, email="red@example.com"))
    await _subscribe(client, "team:1")
    await _subscribe(client, "open:1")
    token = server.token(sub=user, email="blue@example.com")
    ack = await client.emit("realtime:auth", {"token": token}, ack=True)
    assert ack["ok"] is True, ack
    ended = await client.event("realtime:error")
    assert ended["code"] == "REALTIME_SUBSCRIPTION_ENDED" and ended["channel"] == "team:1"
    # the other subscription stays: a publish there is delivered back to this client
    raw = await server.connect(API_KEY)
    await raw.subscribe("open:1")
    await raw.subscribe("team:1")
    await raw.publish("team:1", "gone", {})
    await raw.publish("open:1", "kept", {})
    assert (await client.event("kept")) is not None
    assert not [p for p in client.inbox if '"gone"' in p]


async def test_presence_set_over_socketio_shows_in_snapshots_and_raw_frames(
    server: Server,
) -> None:
    await server.create_channel("room:*")
    user = str(uuid.uuid4())
    client = await _connected(server, server.token(sub=user))
    await _subscribe(client, "room:1")
    raw = await server.connect(server.token())
    await raw.subscribe("room:1")
    ack = await client.emit("realtime:presence", {"channel": "room:1", "state": {"typing": True}},
                            ack=True)  # fmt: skip
    assert ack == {"ok": True, "channel": "room:1"}, ack
    update = await raw.expect("presence", event="update")
    assert update["member"]["presenceId"] == user and update["member"]["state"] == {"typing": True}
    later = await _connected(server, server.token())
    snapshot = (await _subscribe(later, "room:1"))["presence"]["members"]
    assert {"presenceId": user, "state": {"typing": True}}.items() <= next(
        m for m in snapshot if m["presenceId"] == user
    ).items()
    for data, code in (
        ({"channel": "room:1", "state": [1]}, "INVALID_PRESENCE_STATE"),
        ({"channel": "room:2", "state": {}}, "REALTIME_NOT_SUBSCRIBED"),
        ({"channel": "room:1"}, "MALFORMED_FRAME"),
    ):
        refused = await client.emit("realtime:presence", data, ack=True)
        assert refused["ok"] is False and refused["error"]["code"] == code, (data, refused)


async def test_metrics_count_socketio_connections_and_publishes(server: Server) -> None:
    await server.create_channel("room:*")
    before = await scrape(server)
    assert before['pgrealtime_messages_published_total{source="socketio"}'] == 0
    client = await _connected(server, server.token())
    await _subscribe(client, "room:1")
    raw = await server.connect(server.token())
    await raw.subscribe("room:1")
    values = await scrape(server)
    assert values['pgrealtime_connections{protocol="socketio"}'] == 1
    assert values['pgrealtime_connections{protocol="websocket"}'] == 1
    assert values['pgrealtime_connections_opened_total{protocol="socketio"}'] == 1
    for _ in range(2):
        await client.emit("realtime:publish", {"channel": "room:1", "event": "e", "payload": {}})
        await raw.expect("message", event="e")
    await raw.publish("room:1", "r", {})
    after = await scrape(server)
    assert after['pgrealtime_messages_published_total{source="socketio"}'] == 2
    assert after['pgrealtime_messages_published_total{source="websocket"}'] == 1
    await client.close()
    for _ in range(100):
        if (await scrape(server))['pgrealtime_connections{protocol="socketio"}'] == 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the Socket.IO connection is still counted after it closed")
