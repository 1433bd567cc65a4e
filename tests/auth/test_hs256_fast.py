"""The fast HS256 path accepts only what PyJWT accepts, with the same claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgrealtime.auth import Authenticator, mint_token
from pgrealtime.auth.hs256_fast import plain_hs256_claims

pytestmark = pytest.mark.pure

SECRET = "test-secret-that-is-long-enough-for-hs256!"
NOW = int(time.time())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: object, payload_json: str, secret: str) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload_json.encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _pyjwt(token: str) -> dict | None:
    try:
        return jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": [], "verify_aud": False}
        )
    except jwt.PyJWTError:
        return None


# times well away from "now" (a second boundary between the two calls must not matter)
times = st.sampled_from([NOW - 10**6, NOW - 30, NOW + 30, NOW + 10**6]) | st.sampled_from(
    [True, None, "123", str(NOW + 3600), 1.5e9, float(NOW + 3600.7), 2**64, -(2**70), [], {}]
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "HS384", "none", "RS256", "hs256"])},
    optional={
        "typ": st.sampled_from(["JWT", "jwt", "JOSE", 1, None]),
        "kid": st.sampled_from(["k1", 7]),
        "crit": st.sampled_from([["b64"], ["exp"], "x"]),
        "b64": st.booleans(),
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "exp": times,
        "nbf": times,
        "iat": times,
        "sub": st.sampled_from([str(uuid.UUID(int=5)), 42, None, ["x"]]),
        "jti": st.sampled_from(["j", 1]),
        "role": st.sampled_from(["authenticated", "anon", "postgres"]),
        "aud": st.sampled_from(["x", ["a", "b"], 5]),
        "iss": st.sampled_from(["x", 5]),
        "email": values,
        "app": values,
    },
)


@settings(max_examples=400, deadline=None)
@given(
    header=headers,
    payload=claims,
    secret=st.sampled_from([SECRET, SECRET + "x"]),
    tamper=st.sampled_from(["", "signature", "junk", "segments", "payload"]),
)
def test_fast_path_accepts_nothing_pyjwt_refuses(
    header: dict, payload: dict, secret: str, tamper: str
) -> None:
    token = _token(header, json.dumps(payload), secret)
    if tamper == "signature":
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BA")
    elif tamper == "junk":
        token = token.replace(".", ".=", 1)
    elif tamper == "segments":
        token += ".e30"
    elif tamper == "payload":
        head, _, rest = token.partition(".")
        token = head + "." + _b64(b'{"role":"anon"}') + "." + rest.partition(".")[2]
    fast = plain_hs256_claims(token, SECRET.encode(), time.time())
    if fast is not None:
        assert _pyjwt(token) == fast


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=20))
def test_odd_claim_texts_are_read_as_pyjwt_reads_them(text: str) -> None:
    payload = json.dumps({"sub": str(uuid.uuid4()), "exp": NOW + 3600, "x": text})
    token = _token({"alg": "HS256", "typ": "JWT"}, payload, SECRET)
    fast = plain_hs256_claims(token, SECRET.encode(), time.time())
    if fast is not None:
        assert fast == _pyjwt(token)


def test_the_tokens_issuers_make_take_the_fast_path() -> None:
    """So the path is really used: a minted token, and one with a 64-bit integer."""
    minted = mint_token(SECRET, sub=str(uuid.uuid4()), email="a@example.com")
    assert plain_hs256_claims(minted, SECRET.encode(), time.time()) == _pyjwt(minted)
    big = _token({"alg": "HS256"}, json.dumps({"exp": NOW + 60, "n": 2**63}), SECRET)
    assert plain_hs256_claims(big, SECRET.encode(), time.time()) == _pyjwt(big)
    beyond = _token({"alg": "HS256"}, json.dumps({"n": 2**64}), SECRET)
    assert plain_hs256_claims(beyond, SECRET.encode(), time.time()) is None  # PyJWT decides


def test_refusals_are_worded_by_pyjwt() -> None:
    auth = Authenticator(SECRET, "ik_" + "k" * 40)
    expired = _token({"alg": "HS256"}, json.dumps({"exp": NOW - 30}), SECRET)
    wrong_key = _token({"alg": "HS256"}, json.dumps({"exp": NOW + 30}), SECRET + "x")
    for token, code, words in (
        (expired, "TOKEN_EXPIRED", "expired"),
        (wrong_key, "INVALID_TOKEN", "Signature verification failed"),
    ):
        try:
            auth.authenticate(token)
        except Exception as exc:  # AuthError
            assert getattr(exc, "code", None) == code and words in str(exc)
        else:
            raise AssertionError("accepted")


def test_an_integer_exp_written_as_text_still_expires_the_session() -> None:
    """PyJWT accepts "exp": "<digits>"; the session must still get that deadline."""
    auth = Authenticator(SECRET, "ik_" + "k" * 40)
    token = _token(
        {"alg": "HS256"}, json.dumps({"sub": str(uuid.uuid4()), "exp": str(NOW + 600)}), SECRET
    )
    assert auth.authenticate(token).expires_at == float(NOW + 600)
