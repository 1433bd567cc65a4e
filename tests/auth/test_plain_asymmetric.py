"""The fast path for asymmetric tokens (parsing ours, signature check PyJWT's) accepts
only what PyJWT accepts, with the same claims, and is really taken."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from tests.auth.idp import KeyPair, ec_pair, ed25519_pair, rsa_pair
from tests.auth.test_hs256_fast import claims

from pgrealtime.auth.hs256_fast import split_plain
from pgrealtime.auth.keys import VerifyKey, algorithms_for
from pgrealtime.auth.verify import Verifier

pytestmark = pytest.mark.pure

PAIRS = {"RS256": rsa_pair(), "PS256": rsa_pair("ps-1", alg="PS256"), "ES256": ec_pair(),
         "EdDSA": ed25519_pair()}  # fmt: skip
SIGNERS = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "PS256": jwt.algorithms.RSAPSSAlgorithm(RSAAlgorithm.SHA256),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "EdDSA": OKPAlgorithm(),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: dict, payload: dict, pair: KeyPair, sign_alg: str) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = SIGNERS[sign_alg].sign(signing_input.encode(), pair.private)
    return f"{signing_input}.{_b64(signature)}"


def _verifier() -> Verifier:
    keys = [VerifyKey(p.kid, algorithms_for(p.public), p.public, "test") for p in PAIRS.values()]
    return Verifier("s" * 40, public_keys=keys)


def _pyjwt(token: str, alg: str) -> dict | None:
    try:
        return jwt.decode(
            token, PAIRS[alg].public, algorithms=[alg],
            options={"require": [], "verify_aud": False},
        )  # fmt: skip
    except (jwt.PyJWTError, ValueError):
        return None


headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "PS256", "ES256", "EdDSA", "none", "HS256", "es256"])},
    optional={
        "typ": st.sampled_from(["JWT", "jwt", 1, None]),
        "kid": st.sampled_from([*(p.kid for p in PAIRS.values()), "other", 7]),
        "crit": st.sampled_from([["b64"], ["exp"]]),
        "b64": st.booleans(),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    header=headers,
    payload=claims,
    signer=st.sampled_from(list(PAIRS)),
    tamper=st.sampled_from(["", "", "signature", "payload"]),
)
def test_fast_path_accepts_nothing_pyjwt_refuses(
    header: dict, payload: dict, signer: str, tamper: str
) -> None:
    token = _token(header, payload, PAIRS[signer], signer)
    if tamper == "signature":
        token = token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BAAA")
    elif tamper == "payload":
        head, _, rest = token.partition(".")
        token = head + "." + _b64(b'{"role":"anon"}') + "." + rest.partition(".")[2]
    parts = split_plain(token)
    fast = None if parts is None else _verifier()._plain_asymmetric(parts, time.time())
    if fast is not None:
        assert header["alg"] in PAIRS
        assert _pyjwt(token, header["alg"]) == fast


@pytest.mark.parametrize("alg", list(PAIRS))
def test_the_tokens_providers_make_take_the_fast_path(alg: str) -> None:
    claims = {"sub": str(uuid.uuid4()), "role": "authenticated", "exp": int(time.time()) + 60}
    token = PAIRS[alg].sign(claims)
    parts = split_plain(token)
    assert parts is not None
    assert _verifier()._plain_asymmetric(parts, time.time()) == claims == _pyjwt(token, alg)
