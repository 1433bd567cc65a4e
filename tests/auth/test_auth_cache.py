"""The verified-token cache must never accept what verification would refuse."""

from __future__ import annotations

import time

import jwt
import pytest

from pgrealtime.auth import Authenticator, AuthError

pytestmark = pytest.mark.pure

SECRET = "s" * 40


def test_a_cached_token_still_expires() -> None:
    auth = Authenticator(SECRET, "ik_key")
    token = jwt.encode({"role": "anon", "exp": time.time() + 1.2}, SECRET, algorithm="HS256")
    assert auth.authenticate(token).role == "anon"
    assert auth.authenticate(token).role == "anon"  # from the cache
    time.sleep(1.3)
    with pytest.raises(AuthError) as refused:
        auth.authenticate(token)
    assert refused.value.code == "TOKEN_EXPIRED"


def test_refused_tokens_are_not_cached() -> None:
    auth = Authenticator(SECRET, "ik_key")
    forged = jwt.encode({"role": "anon"}, "another-secret-" + "x" * 30, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError) as refused:
            auth.authenticate(forged)
        assert refused.value.code == "INVALID_TOKEN"
