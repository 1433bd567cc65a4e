"""The authenticator a server runs with, from its settings: keys, JWKS, checks, claims."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pgrealtime.auth.keys import KeyProblem, load_pem_key
from pgrealtime.auth.tokens import Authenticator
from pgrealtime.auth.verify import Verifier

if TYPE_CHECKING:
    from pgrealtime.auth.jwks import JwksCache
    from pgrealtime.config import Settings


class AuthSetupError(ValueError):
    """The token settings cannot work (a key file, a URL, an algorithm): exit at start."""


def build_authenticator(settings: Settings) -> tuple[Authenticator, JwksCache | None]:
    """The Authenticator, and the JWKS cache to start (None without --jwks-url)."""
    assert settings.jwt_secret and settings.api_key
    try:
        public_keys = [load_pem_key(Path(path)) for path in settings.jwt_public_key]
    except KeyProblem as exc:
        raise AuthSetupError(str(exc)) from exc
    jwks = None
    if settings.jwks_url:
        from pgrealtime.auth.jwks import JwksCache, url_problem

        problem = url_problem(settings.jwks_url, allow_http=settings.jwks_allow_http)
        if problem is not None:
            raise AuthSetupError(problem)
        jwks = JwksCache(settings.jwks_url)
    try:
        verifier = Verifier(
            settings.jwt_secret,
            public_keys=public_keys,
            jwks=jwks,
            algorithms=settings.jwt_algorithms or None,
            issuer=settings.jwt_issuer or None,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway_seconds,
        )
    except ValueError as exc:
        raise AuthSetupError(str(exc)) from exc
    asymmetric = verifier.algorithms - {"HS256"}
    if asymmetric and not public_keys and jwks is None:
        raise AuthSetupError(
            f"--jwt-algorithms {','.join(sorted(asymmetric))} needs keys:"
            " --jwt-public-key or --jwks-url"
        )
    authenticator = Authenticator(
        settings.jwt_secret,
        settings.api_key,
        require_exp=settings.jwt_require_exp,
        verifier=verifier,
        role_claim=settings.jwt_role_claim,
        user_claim=settings.jwt_user_claim,
        anon_key=settings.anon_key,
    )
    return authenticator, jwks
