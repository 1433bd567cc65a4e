"""Tokens signed with asymmetric keys given as PEM files: each algorithm with its own
key type, and nothing else (no `none`, no algorithm confusion); iss, aud and leeway;
the role and user id read at claim paths."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from tests.auth.idp import KeyPair, ec_pair, ed25519_pair, rsa_pair, user_claims

from pgrealtime.auth import Authenticator, AuthError
from pgrealtime.auth.keys import KeyProblem, load_pem_key
from pgrealtime.auth.setup import AuthSetupError, build_authenticator
from pgrealtime.auth.verify import Verifier
from pgrealtime.config import Settings

pytestmark = pytest.mark.pure

SECRET = "s" * 40
API_KEY = "ik_key"


def _auth(
    *pairs: KeyPair, folder: Path, algorithms: list[str] | None = None, **checks
) -> Authenticator:
    keys = [load_pem_key(pair.write_pem(folder)) for pair in pairs]
    role_claim = checks.pop("role_claim", "role")
    user_claim = checks.pop("user_claim", "sub")
    verifier = Verifier(SECRET, public_keys=keys, algorithms=algorithms, **checks)
    return Authenticator(
        SECRET, API_KEY, verifier=verifier, role_claim=role_claim, user_claim=user_claim
    )


def _refused(auth: Authenticator, token: str) -> AuthError:
    with pytest.raises(AuthError) as refused:
        auth.authenticate(token)
    return refused.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict, claims: dict, sign: bytes | None) -> str:
    """A token built by hand: PyJWT refuses to make the forgeries tested here."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if sign is None:
        return signing_input + "."
    mac = hmac.new(sign, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.mark.parametrize(
    "pair",
    [
        rsa_pair(alg="RS256"),
        rsa_pair(alg="RS384"),
        rsa_pair(alg="RS512"),
        rsa_pair(alg="PS256"),
        ec_pair(alg="ES256"),
        ec_pair(alg="ES384"),
        ed25519_pair(),
    ],
    ids=lambda p: p.alg,
)
def test_each_algorithm_verifies_with_its_key(pair: KeyPair, tmp_path: Path) -> None:
    auth = _auth(pair, folder=tmp_path)
    user = str(uuid.uuid4())
    principal = auth.authenticate(pair.sign(user_claims(user, email="a@example.com")))
    assert (principal.role, principal.user_id) == ("authenticated", user)
    assert principal.claims["email"] == "a@example.com"  # what PostgreSQL sees
    # a PEM key has no kid: it verifies tokens with any kid or none
    assert auth.authenticate(pair.sign(user_claims(), kid=None)).user_id is not None
    # another key of the same type did not sign it
    impostor = KeyPair(
        rsa_pair().private if pair.alg[:2] in ("RS", "PS") else
        (ec_pair(alg=pair.alg).private if pair.alg.startswith("ES") else
         ed25519_pair().private),
        pair.kid,
        pair.alg,
    )  # fmt: skip
    assert _refused(auth, impostor.sign(user_claims())).code == "INVALID_TOKEN"
    # HS256 with the shared secret keeps working beside the keys
    hs = jwt.encode(user_claims(), SECRET, algorithm="HS256")
    assert auth.authenticate(hs).role == "authenticated"


def test_a_key_verifies_only_its_own_type(tmp_path: Path) -> None:
    rsa, p256 = rsa_pair(), ec_pair()
    auth = _auth(rsa, folder=tmp_path)  # RSA only: RS*/PS* and HS256 accepted
    refused = _refused(auth, p256.sign(user_claims()))
    assert "ES256" in refused.message and "not accepted" in refused.message
    # ES256 accepted by configuration, but no EC key: still refused
    auth = _auth(rsa, folder=tmp_path, algorithms=["RS256", "ES256"])
    assert "no configured key" in _refused(auth, p256.sign(user_claims())).message


def test_none_and_algorithm_confusion_are_refused(tmp_path: Path) -> None:
    pair = rsa_pair()
    auth = _auth(pair, folder=tmp_path)
    claims = user_claims()
    unsigned = _hand_made({"alg": "none", "typ": "JWT"}, claims, None)
    assert "'none' is not accepted" in _refused(auth, unsigned).message
    # the classic confusion: HS256 "signed" with the public key's PEM as the secret
    for secret in (pair.public_pem(), pair.public_pem().strip()):
        forged = _hand_made({"alg": "HS256", "typ": "JWT"}, claims, secret)
        assert _refused(auth, forged).code == "INVALID_TOKEN"
        forged = _hand_made({"alg": "HS256", "kid": pair.kid}, claims, secret)
        assert _refused(auth, forged).code == "INVALID_TOKEN"
    # an RSA signature relabelled as another RSA algorithm
    token = pair.sign(claims)
    _, payload, signature = token.split(".")
    relabelled = _b64(json.dumps({"alg": "PS256", "kid": pair.kid}).encode())
    assert _refused(auth, f"{relabelled}.{payload}.{signature}").code == "INVALID_TOKEN"


def test_algorithms_can_be_narrowed(tmp_path: Path) -> None:
    pair = ec_pair()
    auth = _auth(pair, folder=tmp_path, algorithms=["ES256"])
    assert auth.authenticate(pair.sign(user_claims())).role == "authenticated"
    hs = jwt.encode(user_claims(), SECRET, algorithm="HS256")
    assert "'HS256' is not accepted" in _refused(auth, hs).message  # fast path too
    with pytest.raises(ValueError, match="none"):
        Verifier(SECRET, algorithms=["none"])


def test_issuer_audience_and_leeway(tmp_path: Path) -> None:
    pair = rsa_pair()
    auth = _auth(
        pair, folder=tmp_path, issuer="https://idp.example", audience=["realtime"], leeway=30
    )
    good = {"iss": "https://idp.example", "aud": ["other", "realtime"]}
    assert auth.authenticate(pair.sign(user_claims(**good))).role == "authenticated"
    assert "iss" in _refused(auth, pair.sign(user_claims(aud="realtime"))).message
    bad_iss = pair.sign(user_claims(iss="https://evil.example", aud="realtime"))
    assert "issuer" in _refused(auth, bad_iss).message.lower()
    assert "aud" in _refused(auth, pair.sign(user_claims(iss=good["iss"]))).message
    wrong_aud = pair.sign(user_claims(iss=good["iss"], aud="billing"))
    assert "audience" in _refused(auth, wrong_aud).message.lower()
    # HS256 tokens pass the same checks (the fast path hands them to PyJWT)
    hs = jwt.encode(user_claims(), SECRET, algorithm="HS256")
    assert _refused(auth, hs).code == "INVALID_TOKEN"
    hs = jwt.encode(user_claims(**good), SECRET, algorithm="HS256")
    assert auth.authenticate(hs).role == "authenticated"
    # leeway: 10 s past exp is still good for 20 s, and the session lives until then
    late = user_claims(expires_in=-10, **good)
    principal = auth.authenticate(pair.sign(late))
    assert principal.expires_at == late["exp"] + 30
    too_late = pair.sign(user_claims(expires_in=-40, **good))
    assert _refused(auth, too_late).code == "TOKEN_EXPIRED"
    # without leeway the same late token is expired
    strict = _auth(pair, folder=tmp_path, issuer=good["iss"], audience=["realtime"])
    assert _refused(strict, pair.sign(late)).code == "TOKEN_EXPIRED"
    early = user_claims(nbf=int(time.time()) + 20, **good)
    assert auth.authenticate(pair.sign(early)).role == "authenticated"  # within leeway
    assert _refused(strict, pair.sign(early)).code == "INVALID_TOKEN"


def test_role_and_user_at_claim_paths(tmp_path: Path) -> None:
    pair = rsa_pair()
    user = str(uuid.uuid4())
    auth = _auth(pair, folder=tmp_path, role_claim="app_metadata.role", user_claim="uid")
    claims = user_claims(sub="auth0|123", uid=user.upper(), app_metadata={"role": "anon"})
    del claims["role"]
    assert auth.authenticate(pair.sign(claims)).role == "anon"
    claims["app_metadata"] = {"role": "authenticated"}
    principal = auth.authenticate(pair.sign(claims))
    assert principal.user_id == user and principal.claims["sub"] == user  # auth.uid()
    claims["app_metadata"] = {"role": "project_admin"}
    assert auth.authenticate(pair.sign(claims)).is_admin
    claims["app_metadata"] = {"role": "service_role"}
    assert "not allowed" in _refused(auth, pair.sign(claims)).message
    claims["app_metadata"] = {"role": ["authenticated"]}
    assert "not allowed" in _refused(auth, pair.sign(claims)).message
    # absent: authenticated, which needs the user id at its path
    claims.pop("app_metadata")
    assert auth.authenticate(pair.sign(claims)).role == "authenticated"
    claims.pop("uid")
    assert "uid must be a user UUID" in _refused(auth, pair.sign(claims)).message
    # a namespaced claim (Auth0) is read whole, dots and all
    auth = _auth(pair, folder=tmp_path, role_claim="https://app.example/role")
    claims = user_claims(**{"https://app.example/role": "anon"})
    assert auth.authenticate(pair.sign(claims)).role == "anon"


def test_key_files_and_settings_are_checked_at_start(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(KeyProblem, match="not a PEM public key"):
        load_pem_key(tmp_path / "junk.pem")
    with pytest.raises(KeyProblem, match="No such file"):
        load_pem_key(tmp_path / "missing.pem")
    base = {"jwt_secret": SECRET, "api_key": API_KEY}
    with pytest.raises(AuthSetupError, match="needs keys"):
        build_authenticator(Settings(**base, jwt_algorithms=["RS256"]))
    with pytest.raises(AuthSetupError, match="plain http"):
        build_authenticator(Settings(**base, jwks_url="http://idp.example/jwks.json"))
    authenticator, jwks = build_authenticator(
        Settings(**base, jwks_url="http://idp.example/jwks.json", jwks_allow_http=True)
    )
    assert jwks is not None and "RS256" in authenticator.verifier.algorithms
    pem = ec_pair().write_pem(tmp_path)
    authenticator, jwks = build_authenticator(Settings(**base, jwt_public_key=[str(pem)]))
    assert jwks is None and authenticator.verifier.algorithms == {"HS256", "ES256"}
