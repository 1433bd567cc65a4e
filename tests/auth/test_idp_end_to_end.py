"""A server whose clients sign in with an identity provider's tokens (JWKS): connect,
subscribe and refresh with RS256/ES256 tokens, a key rotation without a restart, and
the key set's state in the admin's /health details."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.auth.idp import JwksServer, ec_pair, rsa_pair, user_claims
from tests.conftest import Server, make_settings

from pgrealtime.auth import jwks as jwks_module


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    server = JwksServer(rsa_pair("k1"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def server_settings(idp: JwksServer):
    return make_settings(
        jwks_url=idp.url, jwt_issuer="https://idp.example", jwt_role_claim="app_metadata.role"
    )


def _claims(**more):
    return user_claims(iss="https://idp.example", **more)


async def test_provider_tokens_connect_rotate_and_refresh(
    server: Server, idp: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.create_channel("feed:*")
    (k1,) = idp.pairs
    claims = _claims()
    client = await server.connect(k1.sign(claims))
    assert (await client.subscribe("feed:1"))["type"] == "subscribed"
    # rotation: the provider now signs with an EC key of a new kid
    k2 = ec_pair("k2")
    idp.rotate(k1, k2)
    monkeypatch.setattr(jwks_module, "UNKNOWN_KID_SECONDS", 0.0)
    other = await server.connect(k2.sign(_claims()))
    assert (await other.subscribe("feed:1"))["type"] == "subscribed"
    # the first client refreshes with a token of the new key: same user, kept
    reply = await client.auth(k2.sign(_claims(sub=claims["sub"], expires_in=900)))
    assert reply["type"] == "auth_success" and reply["expiresAt"] == claims["iat"] + 900
    assert (await client.publish("feed:1", "e", {"n": 1}))["type"] == "published"
    assert (await other.expect("message"))["payload"] == {"n": 1}
    # a nested role claim: the provider's admin reaches the admin REST API
    admin = k2.sign(_claims(app_metadata={"role": "project_admin"}))
    for token, expected in ((admin, 200), (k2.sign(_claims()), 403)):
        headers = {"Authorization": f"Bearer {token}"}
        status, _ = await server.api("GET", "/api/realtime/channels", headers=headers)
        assert status == expected
    wrong = await (await server.connect()).auth(k2.sign(user_claims(iss="https://evil")))
    assert wrong["code"] == "INVALID_TOKEN"
    status, body = await server.api("GET", "/health")
    assert status == 200
    jwks = body["details"]["jwks"]
    assert jwks["state"] == "ok" and jwks["keys"] == 2 and set(jwks["kids"]) == {"k1", "k2"}
    # the provider goes down: the last good keys stay in use, /health says so
    await idp.down()
    stranger = await server.connect()
    refused = await stranger.auth(rsa_pair("k3").sign(_claims()))
    assert refused["code"] == "INVALID_TOKEN"
    late = await server.connect(k1.sign(_claims()))
    assert (await late.subscribe("feed:1"))["type"] == "subscribed"
    status, body = await server.api("GET", "/health")
    assert status == 200 and body["status"] == "ok"  # see docs: not degraded
    assert body["details"]["jwks"]["state"] == "stale" and body["details"]["jwks"]["lastError"]
