"""Keys from a JWKS URL: a real HTTP server on loopback that rotates its keys and goes
down. A rotation is followed at the first token of the new kid (one refetch, shared by
concurrent connects, at most one per 30 s); a server that is down keeps the last good
keys; one that never answered refuses tokens with a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import jwt
import pytest
from tests.auth.idp import JwksServer, ec_pair, ed25519_pair, rsa_pair, user_claims

from pgrealtime.auth import Authenticator, AuthError
from pgrealtime.auth import jwks as jwks_module
from pgrealtime.auth.jwks import JwksCache, max_age
from pgrealtime.auth.verify import Verifier

SECRET = "s" * 40


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    server = JwksServer(rsa_pair("old"), ec_pair("ec-old"))
    await server.start()
    yield server
    await server.stop()


async def _started(url: str) -> tuple[Authenticator, JwksCache]:
    cache = JwksCache(url, timeout=2)
    await cache.start()
    return Authenticator(SECRET, "ik_key", verifier=Verifier(SECRET, jwks=cache)), cache


async def _refused(auth: Authenticator, token: str) -> AuthError:
    with pytest.raises(AuthError) as refused:
        await auth.authenticate_async(token)
    return refused.value


async def test_rotation_is_followed_at_the_first_token_of_the_new_kid(
    idp: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, ec_old = idp.pairs
    auth, cache = await _started(idp.url)
    try:
        assert cache.status()["state"] == "ok" and cache.status()["keys"] == 2
        assert (await auth.authenticate_async(old.sign(user_claims()))).role == "authenticated"
        assert (await auth.authenticate_async(ec_old.sign(user_claims()))).user_id
        assert idp.requests == 1  # known kids need no fetch

        new = ed25519_pair("new")
        idp.rotate(new)
        monkeypatch.setattr(jwks_module, "UNKNOWN_KID_SECONDS", 0.0)  # no wait for the test
        # 20 connects with the new kid at once: one fetch for all of them
        principals = await asyncio.gather(
            *(auth.authenticate_async(new.sign(user_claims())) for _ in range(20))
        )
        assert {p.role for p in principals} == {"authenticated"}
        assert idp.requests == 2
        # the old key left the set with the rotation
        assert "kid 'old'" in (await _refused(auth, old.sign(user_claims()))).message

        # made-up kids fetch at most once per UNKNOWN_KID_SECONDS
        monkeypatch.setattr(jwks_module, "UNKNOWN_KID_SECONDS", 30.0)
        before = idp.requests
        for n in range(10):
            refused = await _refused(auth, new.sign(user_claims(), kid=f"made-up-{n}"))
            assert refused.code == "INVALID_TOKEN"
        assert idp.requests - before <= 1
        # a sync caller (no waiting) is refused on an unknown kid, never blocks
        with pytest.raises(AuthError, match="no signing key with kid"):
            auth.authenticate(new.sign(user_claims(), kid="another"))
    finally:
        await cache.stop()


async def test_down_keeps_the_last_good_keys(
    idp: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, _ = idp.pairs
    auth, cache = await _started(idp.url)
    try:
        await idp.down()
        monkeypatch.setattr(jwks_module, "UNKNOWN_KID_SECONDS", 0.0)
        rotated = rsa_pair("rotated-while-down")
        refused = await _refused(auth, rotated.sign(user_claims()))
        assert refused.code == "INVALID_TOKEN" and "could not be refreshed" in refused.message
        status = cache.status()
        assert status["state"] == "stale" and status["keys"] == 2
        assert status["lastError"] and status["lastSuccess"] < status["lastFetch"]
        # tokens of the keys it had still verify
        assert (await auth.authenticate_async(old.sign(user_claims()))).role == "authenticated"
        # back up, with the new key: the next token of its kid fetches it
        idp.rotate(rotated)
        await idp.up()
        assert (await auth.authenticate_async(rotated.sign(user_claims()))).user_id
        assert cache.status()["state"] == "ok" and cache.status()["lastError"] is None
    finally:
        await cache.stop()


async def test_never_loaded_refuses_provider_tokens_clearly(idp: JwksServer) -> None:
    old, _ = idp.pairs
    await idp.down()
    auth, cache = await _started(idp.url)
    try:
        assert cache.status()["state"] == "not_loaded" and cache.status()["keys"] == 0
        refused = await _refused(auth, old.sign(user_claims()))
        assert refused.code == "SERVICE_UNAVAILABLE"
        assert "signing keys (JWKS) could not be loaded" in refused.message
        assert "127.0.0.1" not in refused.message  # the fetch's error stays in logs/health
        refused = await _refused(auth, old.sign(user_claims(), kid=None))
        assert refused.code == "SERVICE_UNAVAILABLE"
        # the shared secret still works
        hs = jwt.encode(user_claims(), SECRET, algorithm="HS256")
        assert (await auth.authenticate_async(hs)).role == "authenticated"
    finally:
        await cache.stop()


async def test_background_refresh_follows_max_age(
    idp: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jwks_module, "MIN_REFRESH_SECONDS", 0.0)
    idp.max_age = 0  # refresh as often as the loop allows (1 s)
    auth, cache = await _started(idp.url)
    try:
        new = rsa_pair("published-ahead")
        idp.rotate(*idp.pairs, new)
        for _ in range(60):
            if idp.requests >= 2:
                break
            await asyncio.sleep(0.1)
        assert idp.requests >= 2
        # known before any token named it: no fetch at the connect
        before = idp.requests
        assert auth.authenticate(new.sign(user_claims())).role == "authenticated"
        assert idp.requests == before
    finally:
        await cache.stop()


def test_max_age_is_bounded() -> None:
    assert max_age(None) == jwks_module.DEFAULT_REFRESH_SECONDS
    assert max_age("public, max-age=10") == jwks_module.MIN_REFRESH_SECONDS
    assert max_age("max-age=3600, must-revalidate") == 3600
    assert max_age("max-age=99999999") == jwks_module.MAX_REFRESH_SECONDS


async def test_documents_that_are_not_key_sets_keep_the_keys(idp: JwksServer) -> None:
    _, cache = await _started(idp.url)
    try:
        idp.rotate()  # an empty set is no set: the keys stay
        cache._last_attempt = -float("inf")
        await cache.refetch_for_unknown_kid()
        assert cache.status()["keys"] == 2 and "no usable signing key" in cache.last_error
    finally:
        await cache.stop()
