"""Accepting the common plain token quickly, and nothing that PyJWT would refuse.

PyJWT spends about 40 us on a token (its own base64 and JSON helpers, option merging,
checks for algorithms we never allow); in a reconnect storm of distinct tokens that is
a tenth of a session's cost. This module accepts only the plain shape issuers produce
(header exactly `alg: HS256` and optionally `typ: JWT`, numeric time claims, string
`sub`/`jti`) after the same checks PyJWT makes for it, with the stdlib's HMAC. Anything
else, and every token it would refuse, returns None: the caller then asks PyJWT, which
decides and words the error. So this can only be as strict as PyJWT, never looser
(`tests/auth/test_hs256_fast.py` checks that against PyJWT on generated tokens).

The same holds for asymmetric tokens (`plain_claims`, header `alg`, optional `typ` and
`kid`): the signature is checked by PyJWT's own algorithm object, only the parsing is
ours. PyJWT 2.10+ checks every base64 character in Python, ~60 us a token; for an
ES256 token that doubled the cost of a connect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import orjson

_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# orjson reads an integer beyond 64 bits as a float, the stdlib (PyJWT) as an int:
# any run of 20 digits goes to PyJWT
_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(segment: str) -> dict | None:
    try:
        data = _b64(segment)
        value = orjson.loads(data)
    except (ValueError, orjson.JSONDecodeError):
        return None
    if type(value) is not dict or _LONG_DIGITS.search(data):
        return None
    return value


Parts = tuple[dict, bytes, str, bytes]  # header, signing input, payload segment, signature


def split_plain(token: str) -> Parts | None:
    """(header, signing input, payload segment, signature) of a token of the plain
    compact shape, or None (PyJWT decides)."""
    if _TOKEN.fullmatch(token) is None:
        return None
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = _json_object(header_b64)
    if header is None or header.get("typ", "JWT") != "JWT":
        return None
    try:
        signature = _b64(signature_b64)
    except ValueError:
        return None
    return header, f"{header_b64}.{payload_b64}".encode(), payload_b64, signature


def plain_claims(payload_b64: str, now: float) -> dict | None:
    """The claims of a token whose signature was verified, when PyJWT (no leeway)
    would accept them as they are; else None."""
    claims = _json_object(payload_b64)
    if claims is None:
        return None
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and type(value) not in (int, float):
            return None  # absent or a plain number (JSON has no NaN or infinity)
    # PyJWT compares whole seconds (int() of the claim) with the current time
    if "exp" in claims and int(claims["exp"]) <= now:
        return None
    if "nbf" in claims and int(claims["nbf"]) > now:
        return None
    if "iat" in claims and int(claims["iat"]) > now:
        return None
    for name in ("sub", "jti"):
        if name in claims and type(claims[name]) is not str:
            return None
    return claims


def plain_hs256_claims(token: str, secret: bytes, now: float) -> dict | None:
    """The claims of a valid plain HS256 token, or None (decide with PyJWT)."""
    parts = split_plain(token)
    return None if parts is None else hs256_claims(parts, secret, now)


def hs256_claims(parts: Parts, secret: bytes, now: float) -> dict | None:
    """plain_hs256_claims of a token already split."""
    header, signing_input, payload_b64, signature = parts
    if header.get("alg") != "HS256" or header.keys() - {"alg", "typ"}:
        return None
    expected = hmac.new(secret, signing_input, hashlib.sha256)
    if not hmac.compare_digest(signature, expected.digest()):
        return None
    return plain_claims(payload_b64, now)
