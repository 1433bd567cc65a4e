"""Why a credential was refused: AuthError and the two cases callers act on."""

from __future__ import annotations


class AuthError(Exception):
    """A credential was refused. `code` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownKey(AuthError):
    """The token names a `kid` the JWKS lacks: after a refetch it may verify (a key
    rotation), so an async caller refetches (rate-limited) and asks once more."""

    def __init__(self, kid: str, last_error: str | None) -> None:
        stale = " (the key set could not be refreshed)" if last_error else ""
        super().__init__("INVALID_TOKEN", f"Invalid token: no signing key with kid {kid!r}{stale}")
        self.kid = kid


class KeysUnavailable(AuthError):
    """The JWKS never loaded: nothing can verify the token, which may be fine. Not
    INVALID_TOKEN, so a client does not log its user out for our outage."""

    def __init__(self, message: str) -> None:
        super().__init__("SERVICE_UNAVAILABLE", message)
