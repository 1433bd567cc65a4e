"""Refresh in place: `auth` again on a live connection. The same user's new token
replaces the claims and the expiry, every subscription is checked again against the
new claims (those now refused end), another user's token is refused; the client is
warned before its token expires."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from tests.conftest import API_KEY, Client, Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(token_expiry_warning_seconds=3)


async def _subscribed(client: Client, channel: str) -> None:
    reply = await client.subscribe(channel)
    assert reply["type"] == "subscribed", reply


async def test_a_subscription_survives_refreshes_across_the_expiry(server: Server) -> None:
    await server.create_channel("feed:*")
    user = str(uuid.uuid4())
    # exp is a whole second (now rounded down + expires_in): a token lives between
    # expires_in - 1 and expires_in seconds, so each refresh comes 1 s after the last
    # with tokens of 3 s: always 1 s or more before the current one ends
    client = await server.connect(server.token(sub=user, expires_in=3))
    await _subscribed(client, "feed:1")
    first_deadline = time.time() + 3
    expiries = []
    for _ in range(5):  # 5 s in all: the first token (3 s at most) would have cut it
        await asyncio.sleep(1)
        reply = await client.auth(server.token(sub=user, expires_in=3))
        assert reply["type"] == "auth_success" and reply["userId"] == user, reply
        expiries.append(reply["expiresAt"])
    assert time.time() > first_deadline + 1
    assert expiries == sorted(expiries) and expiries[-1] > expiries[0]
    publisher = await server.connect(API_KEY)
    await _subscribed(publisher, "feed:1")
    await publisher.publish("feed:1", "news", {"n": 1})
    message = await client.expect("message")
    assert message["payload"] == {"n": 1}
    assert not [f for f in client.inbox if f.get("code") == "TOKEN_EXPIRED"]


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
    client = await server.connect(server.token(sub=user, email="red@example.com"))
    await _subscribed(client, "team:1")
    await _subscribed(client, "open:1")
    reply = await client.auth(server.token(sub=user, email="blue@example.com"))
    assert reply["type"] == "auth_success", reply
    ended = await client.expect("error", code="REALTIME_SUBSCRIPTION_ENDED")
    assert ended["channel"] == "team:1" and "refreshed token" in ended["message"]
    refused = await client.publish("team:1", "e", {})
    assert refused["code"] == "REALTIME_NOT_SUBSCRIBED"
    assert (await client.publish("open:1", "e", {}))["type"] == "published"
    # the same claims again: subscribing works again
    await client.auth(server.token(sub=user, email="red@example.com"))
    await _subscribed(client, "team:1")


async def test_a_refresh_naming_another_user_is_refused(server: Server) -> None:
    await server.create_channel("feed:*")
    user = str(uuid.uuid4())
    client = await server.connect(server.token(sub=user))
    await _subscribed(client, "feed:1")
    for other in (server.token(), server.token(role="anon"), server.token(role="project_admin")):
        refused = await client.auth(other)
        assert refused["code"] == "INVALID_TOKEN" and "another user" in refused["message"]
    assert (await client.publish("feed:1", "e", {}))["type"] == "published"  # unchanged
    # a connection that names nobody yet (anon) may sign in; its subscriptions are
    # checked against the user's claims
    visitor = await server.connect(server.token(role="anon"))
    signed_in = await visitor.auth(server.token(sub=user))
    assert signed_in["type"] == "auth_success" and signed_in["userId"] == user
    await _subscribed(visitor, "feed:1")


async def test_the_client_is_warned_before_its_token_expires(server: Server) -> None:
    user = str(uuid.uuid4())
    client = await server.connect(server.token(sub=user, expires_in=4))  # warned at 1 s
    warning = await client.expect("token_expiring", timeout=5)
    assert 1 <= warning["expiresIn"] <= 3
    reply = await client.auth(server.token(sub=user, expires_in=600))
    assert reply["type"] == "auth_success"
    await asyncio.sleep(3.5)  # past the first token's exp: the refresh moved the cut
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert not [f for f in client.inbox if f["type"] in ("token_expiring", "error")]


@pytest.mark.parametrize(
    "server_settings", [make_settings(token_expiry_warning_seconds=0)], indirect=False
)
async def test_no_warning_when_turned_off(server: Server) -> None:
    client = await server.connect(server.token(expires_in=2))
    err = await client.expect("error", timeout=5)
    assert err["code"] == "TOKEN_EXPIRED"
    assert not [f for f in client.inbox if f["type"] == "token_expiring"]
