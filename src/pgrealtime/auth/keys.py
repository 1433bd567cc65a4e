"""Public keys that verify asymmetric tokens, and which algorithms each may verify.

A key verifies only the algorithms of its own type (an RSA key RS*/PS*, a P-256 key
ES256, an Ed25519 key EdDSA): the token's `alg` picks among the keys, never the other
way round, so an HS256 token signed with a public key's bytes (algorithm confusion) is
checked against the HS256 secret and fails. Keys come from PEM files
(`--jwt-public-key`) or from a JWKS document (auth/jwks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values()) | {"EdDSA"}
SYMMETRIC_ALGORITHMS = frozenset({"HS256"})  # the one shared secret (--jwt-secret)


class KeyProblem(ValueError):
    """A key file or JWK that cannot be used (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One public key: `kid` (None for a PEM file: it matches any token's kid),
    what it may verify, and where it came from (for logs and /health)."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any  # a cryptography public key object, as PyJWT takes it
    source: str


def algorithms_for(key: Any) -> frozenset[str]:
    """The algorithms a public key of this type can verify (empty: not one we use)."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def load_pem_key(path: Path) -> VerifyKey:
    """A PEM public key (or an X.509 certificate's key) from a file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"--jwt-public-key {path}: {exc.strerror or exc}") from exc
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError as exc:
        raise KeyProblem(
            f"--jwt-public-key {path}: not a PEM public key or certificate ({exc})"
        ) from exc
    algorithms = algorithms_for(key)
    if not algorithms:
        raise KeyProblem(f"--jwt-public-key {path}: unsupported key type {type(key).__name__}")
    return VerifyKey(None, algorithms, key, str(path))


def key_from_jwk(jwk: dict[str, Any], source: str) -> VerifyKey | None:
    """A JWKS entry as a VerifyKey; None for an entry we do not verify with (a private
    or symmetric key, an encryption key, an unknown type): the rest of the set counts."""
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    if jwk.get("kty") not in ("RSA", "EC", "OKP") or "d" in jwk:
        return None  # symmetric keys and private keys never verify client tokens
    try:
        parsed = jwt.PyJWK(jwk)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    algorithms = algorithms_for(parsed.key)
    alg = jwk.get("alg")
    if alg is not None:  # a key that names its algorithm verifies only that one
        algorithms = algorithms & {alg}
    if not algorithms:
        return None
    kid = jwk.get("kid")
    return VerifyKey(kid if isinstance(kid, str) else None, algorithms, parsed.key, source)
