"""Which key verifies a token, and PyJWT's checks with it (signature, time, iss, aud).

The token's header `alg` must be one the server accepts (--jwt-algorithms; by default
those of the configured keys); HS256 is checked with the shared secret only, every
other algorithm with the public keys of a type that can produce it (auth/keys.py), so
`none` and algorithm confusion are refused whatever the token says. The common plain
HS256 token takes the fast path (hs256_fast.py) when it also passes `iss`/`aud`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import jwt

from pgrealtime.auth.errors import AuthError, KeysUnavailable, UnknownKey
from pgrealtime.auth.hs256_fast import Parts, hs256_claims, plain_claims, split_plain
from pgrealtime.auth.keys import ASYMMETRIC_ALGORITHMS, SYMMETRIC_ALGORITHMS, VerifyKey

if TYPE_CHECKING:  # the cache (and aiohttp) only where a JWKS is configured
    from pgrealtime.auth.jwks import JwksCache

SUPPORTED_ALGORITHMS = SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
# PyJWT's own algorithm objects: the fast path checks signatures exactly as PyJWT does
_PYJWT_ALGORITHMS = jwt.algorithms.get_default_algorithms()


def default_algorithms(public_keys: Sequence[VerifyKey], jwks: JwksCache | None) -> frozenset:
    """Those of the configured keys: HS256 (the secret always exists), each PEM key's,
    and with a JWKS every asymmetric one (each key still verifies only its own type,
    and the set's types change with rotations)."""
    algorithms = set(SYMMETRIC_ALGORITHMS)
    for key in public_keys:
        algorithms |= key.algorithms
    if jwks is not None:
        algorithms |= ASYMMETRIC_ALGORITHMS
    return frozenset(algorithms)


class Verifier:
    """A token -> its verified claims, or AuthError saying why not."""

    def __init__(
        self,
        secret: str,
        *,
        public_keys: Sequence[VerifyKey] = (),
        jwks: JwksCache | None = None,
        algorithms: Collection[str] | None = None,
        issuer: str | None = None,
        audience: Collection[str] = (),
        leeway: float = 0.0,
    ) -> None:
        self._secret = secret
        self._secret_bytes = secret.encode()
        self._public_keys = tuple(public_keys)
        self.jwks = jwks
        chosen = default_algorithms(public_keys, jwks) if not algorithms else algorithms
        unknown = set(chosen) - SUPPORTED_ALGORITHMS
        if unknown:
            raise ValueError(
                f"--jwt-algorithms: {', '.join(sorted(unknown))} not supported"
                f" (supported: {', '.join(sorted(SUPPORTED_ALGORITHMS))})"
            )
        self.algorithms = frozenset(chosen)
        self._issuer = issuer
        self._audience = tuple(audience)
        self.leeway = leeway
        self._options: dict[str, Any] = {"require": [], "verify_aud": bool(self._audience)}

    def decode(self, token: str, now: float) -> dict:
        """Verified claims. Raises UnknownKey when the token names a kid the JWKS lacks
        (the caller may refetch and ask again), AuthError otherwise."""
        parts = split_plain(token)
        if parts is not None:  # the plain common shape: the fast path
            if parts[0].get("alg") == "HS256":
                hs256 = "HS256" in self.algorithms
                claims = hs256_claims(parts, self._secret_bytes, now) if hs256 else None
            else:
                claims = self._plain_asymmetric(parts, now)
            if claims is not None and self._iss_aud_ok(claims):
                return claims
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError("INVALID_TOKEN", f"Invalid token: {exc}") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise AuthError(
                "INVALID_TOKEN",
                f"Invalid token: algorithm {alg!r} is not accepted (accepted: {accepted})",
            )
        if alg in SYMMETRIC_ALGORITHMS:
            return self._pyjwt(token, self._secret, alg)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("INVALID_TOKEN", "Invalid token: kid must be a string")
        candidates = self._candidates(alg, kid)
        signature_failed: AuthError | None = None
        for key in candidates:
            try:
                return self._pyjwt(token, key.key, alg)
            except _BadSignature as exc:
                signature_failed = exc
        jwks = self.jwks
        if jwks is not None and kid is not None and not any(k.kid == kid for k in candidates):
            if not jwks.loaded:
                raise KeysUnavailable(_not_loaded(jwks))
            raise UnknownKey(kid, jwks.last_error)
        if signature_failed is not None:
            raise AuthError("INVALID_TOKEN", "Invalid token: Signature verification failed")
        if jwks is not None and not jwks.loaded:
            raise KeysUnavailable(_not_loaded(jwks))
        raise AuthError("INVALID_TOKEN", f"Invalid token: no configured key verifies {alg}")

    def _plain_asymmetric(self, parts: Parts, now: float) -> dict | None:
        """The claims of a plain asymmetric token that verifies with a key of its kid
        and that PyJWT would accept as they are; else None (PyJWT decides, and words
        the refusal). The signature check is PyJWT's algorithm object."""
        if not self._public_keys and self.jwks is None:
            return None  # HS256 only: nothing to try
        header, signing_input, payload_b64, signature = parts
        alg = header.get("alg")
        kid = header.get("kid")
        if alg not in self.algorithms or alg in SYMMETRIC_ALGORITHMS:
            return None
        if header.keys() - {"alg", "typ", "kid"} or (kid is not None and type(kid) is not str):
            return None
        algorithm = _PYJWT_ALGORITHMS.get(alg)
        if algorithm is None:
            return None
        for key in self._candidates(alg, kid):
            if algorithm.verify(signing_input, key.key, signature):
                return plain_claims(payload_b64, now)
        return None

    def _candidates(self, alg: str, kid: str | None) -> list[VerifyKey]:
        """The JWKS keys of that kid (all of the set for a token without one; a key
        without kid matches any), then the PEM keys (no kid either); only keys that can
        produce `alg`."""
        found: list[VerifyKey] = []
        if self.jwks is not None:
            found = [k for k in self.jwks.keys if kid is None or k.kid in (kid, None)]
        found += self._public_keys
        return [k for k in found if alg in k.algorithms]

    def _iss_aud_ok(self, claims: dict) -> bool:
        """The fast path's claims pass --jwt-issuer/--jwt-audience (else PyJWT decides
        and words the refusal)."""
        if self._issuer is not None and claims.get("iss") != self._issuer:
            return False
        if self._audience:
            aud = claims.get("aud")
            given = [aud] if isinstance(aud, str) else aud
            if not isinstance(given, list) or not any(
                isinstance(a, str) and a in self._audience for a in given
            ):
                return False
        return True

    def _pyjwt(self, token: str, key: Any, alg: str) -> dict:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                options=self._options,
                issuer=self._issuer,
                audience=list(self._audience) or None,
                leeway=self.leeway,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("TOKEN_EXPIRED", "Invalid token: expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise _BadSignature("INVALID_TOKEN", f"Invalid token: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("INVALID_TOKEN", f"Invalid token: {exc}") from exc
        except (OverflowError, ValueError, TypeError) as exc:  # odd claims PyJWT trips on
            raise AuthError("INVALID_TOKEN", f"Invalid token: {exc}") from exc


class _BadSignature(AuthError):
    """This key did not sign it (another candidate may have)."""


def _not_loaded(jwks: JwksCache) -> str:
    """Why (the fetch's error stays in the logs and /health: it names hosts)."""
    return (
        "Cannot verify the token yet: the identity provider's signing keys (JWKS) could"
        " not be loaded; try again later"
    )
