"""Who is calling, once authenticated: a Principal(role, user_id, claims).

Roles come from a fixed allow-list (ROLES); anything else in a token is refused, so a
forged `"role": "postgres"` can never reach `SET ROLE`. The engine, sessions and the
change router hold a Principal and need nothing else from authentication.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

ROLES = ("anon", "authenticated", "project_admin")
ADMIN_ROLE = "project_admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Kept by every session for its life, so it is small: the claims are held only
    encoded, as PostgreSQL sees them in `request.jwt.claims` (the one use they have)."""

    role: str
    user_id: str | None = None
    claims_json: str = "{}"
    expires_at: float | None = None

    @classmethod
    def from_claims(
        cls, role: str, user_id: str | None, claims: dict, expires_at: float | None = None
    ) -> Principal:
        """Raises TypeError for claims that JSON cannot carry (integers beyond 64 bits)."""
        return cls(role, user_id, orjson.dumps(claims).decode(), expires_at)

    @property
    def claims(self) -> dict:
        return orjson.loads(self.claims_json)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE


ADMIN = Principal.from_claims(ADMIN_ROLE, None, {"role": ADMIN_ROLE})
ANON = Principal.from_claims(ROLES[0], None, {"role": ROLES[0]})  # who the anon key proves
