"""Credentials to a Principal: JWTs (with a verified-token cache) and the admin API key.

Which key verifies a token is verify.py's job; this turns verified claims into a
Principal: the role and user id read at their claim paths (claims.py), the role one of
ROLES (auth/principal.py), anything else refused, so a forged `"role": "postgres"` can
never reach `SET ROLE`. Also mints HS256 tokens for the CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import OrderedDict

import jwt

from pgrealtime.auth.claims import MISSING, claim_at
from pgrealtime.auth.errors import AuthError, UnknownKey
from pgrealtime.auth.principal import ADMIN, ADMIN_ROLE, ANON, ROLES, Principal
from pgrealtime.auth.verify import Verifier
from pgrealtime.config import API_KEY_PREFIX

VERIFIED_TOKENS = 10_000  # verified tokens remembered (the cache never accepts a new one)
# Roles whose tokens must carry `exp` (unless --no-jwt-require-exp): a user's or an
# admin's token that never expires cannot be taken back short of changing the JWT
# secret. Anon tokens are exempt: like a public "anon key" they name nobody and grant
# only what policies allow anyone.
EXP_REQUIRED_ROLES = frozenset({"authenticated", ADMIN_ROLE})


def _canonical_uuid(value: object) -> str | None:
    """The UUID's canonical text, or None: "{...}", "urn:uuid:..." and bare hex are
    UUIDs to Python only, and auth.uid() in policies must see what the server reports."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _is_uuid(value: object) -> bool:
    return _canonical_uuid(value) is not None


class Authenticator:
    """Checks JWTs, the admin API key and the anon key (an opaque string, as
    InsForge's anonKey: its SDK sends it where a token goes)."""

    def __init__(
        self,
        jwt_secret: str,
        api_key: str,
        *,
        require_exp: bool = True,
        verifier: Verifier | None = None,
        role_claim: str = "role",
        user_claim: str = "sub",
        anon_key: str | None = None,
    ) -> None:
        self._anon_key = anon_key.encode() if anon_key else None
        self._require_exp = require_exp
        self._api_key = api_key.encode()
        self.verifier = verifier or Verifier(jwt_secret)
        self._leeway = self.verifier.leeway
        self._role_claim = role_claim
        self._user_claim = user_claim
        # Tokens already verified: a reconnect storm often repeats the same tokens, and
        # a signature check plus JSON decoding is most of an `auth` frame's cost (an
        # RS256 or ES256 check far more than HS256). Keyed by a 128-bit digest of the
        # token: 49 bytes instead of the token's few hundred, for each of up to
        # VERIFIED_TOKENS entries.
        self._verified: OrderedDict[bytes, Principal] = OrderedDict()

    def authenticate(self, credential: str) -> Principal:
        """A token or API key -> Principal, or AuthError with a precise code. A token
        whose kid the JWKS lacks is refused here (UnknownKey): callers that can wait
        use authenticate_async, which refetches the key set first."""
        if not isinstance(credential, str) or not credential:
            raise AuthError("INVALID_TOKEN", "Invalid token: empty")
        if credential.startswith(API_KEY_PREFIX):
            if hmac.compare_digest(credential.encode(), self._api_key):
                return ADMIN
            raise AuthError("INVALID_API_KEY", "Invalid API key")
        if self._anon_key is not None and hmac.compare_digest(credential.encode(), self._anon_key):
            return ANON
        key = hashlib.blake2b(credential.encode(), digest_size=16).digest()
        cached = self._verified.get(key)
        if cached is not None:
            if cached.expires_at is not None and cached.expires_at <= time.time():
                del self._verified[key]
                raise AuthError("TOKEN_EXPIRED", "Invalid token: expired")
            return cached
        principal = self._verify_jwt(credential)
        self._verified[key] = principal
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    async def authenticate_async(self, credential: str) -> Principal:
        """As authenticate; a token naming a kid the JWKS lacks (a key rotation) waits
        for a refetch of the set (at most one per 30 s, shared by every caller) and is
        checked once more."""
        try:
            return self.authenticate(credential)
        except UnknownKey:
            jwks = self.verifier.jwks
            if jwks is None:
                raise
            await jwks.refetch_for_unknown_kid()
        return self.authenticate(credential)

    def _verify_jwt(self, token: str) -> Principal:
        claims = self.verifier.decode(token, time.time())
        if not isinstance(claims, dict):
            raise AuthError("INVALID_TOKEN", "Invalid token: claims must be an object")
        role = claim_at(claims, self._role_claim)
        if role is MISSING:
            role = "authenticated"
        if role not in ROLES:
            raise AuthError("INVALID_TOKEN", f"Invalid token: role {role!r} is not allowed")
        role = ROLES[ROLES.index(role)]  # the shared constant: every session keeps it
        user_id = _canonical_uuid(claim_at(claims, self._user_claim))
        if role == "authenticated" and user_id is None:
            raise AuthError(
                "INVALID_TOKEN", f"Invalid token: {self._user_claim} must be a user UUID"
            )
        claims = {**claims, "role": role}
        if role == "authenticated":
            claims["sub"] = user_id  # what auth.uid() reads, wherever the provider put it
        else:
            claims.pop("sub", None)  # as InsForge: only authenticated callers carry sub
        exp = claims.get("exp")
        if exp is None and self._require_exp and role in EXP_REQUIRED_ROLES:
            raise AuthError("INVALID_TOKEN", f"Invalid token: {role} tokens must have an exp")
        try:  # the claims must reach PostgreSQL: encodable, and readable as jsonb
            principal = Principal.from_claims(
                role,
                user_id if role == "authenticated" else None,
                claims,
                # the leeway tolerates our clock running ahead of the issuer's: the
                # token is good (and the session lives) until exp + leeway here
                None if exp is None else _deadline(exp) + self._leeway,
            )
        except TypeError as exc:  # integers beyond 64 bits
            raise AuthError(
                "INVALID_TOKEN", f"Invalid token: claims cannot be encoded: {exc}"
            ) from exc
        if "\\u0000" in principal.claims_json:
            raise AuthError("INVALID_TOKEN", "Invalid token: claims must not contain U+0000")
        return principal


def _deadline(exp: object) -> float:
    """`exp` (already checked by PyJWT) as epoch seconds; one beyond a float's range
    is no deadline at all but a malformed token."""
    try:
        # PyJWT also accepts an integer written as a string ("exp": "1700000000")
        return float(exp if isinstance(exp, int | float) else int(str(exp)))
    except (OverflowError, ValueError) as exc:
        raise AuthError("INVALID_TOKEN", "Invalid token: exp is out of range") from exc


def mint_token(
    secret: str,
    *,
    role: str = "authenticated",
    sub: str | None = None,
    email: str | None = None,
    expires_in: int = 3600,
) -> str:
    """Sign a token for a client (the `pgrealtime token` command)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "authenticated" and not _is_uuid(sub):
        raise ValueError("an authenticated token needs --sub <uuid>")
    now = int(time.time())
    claims: dict[str, object] = {"role": role, "iat": now, "exp": now + expires_in}
    if sub is not None:
        claims["sub"] = sub
    if email is not None:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm="HS256")
