"""Authentication: who a caller is (principal) and how a credential proves it (tokens).

The package's public names; the engine imports `pgrealtime.auth.principal` directly so
that it does not load JWT handling it never uses.
"""

from pgrealtime.auth.errors import AuthError
from pgrealtime.auth.principal import ADMIN, ADMIN_ROLE, ROLES, Principal
from pgrealtime.auth.tokens import EXP_REQUIRED_ROLES, Authenticator, mint_token

__all__ = [
    "ADMIN",
    "ADMIN_ROLE",
    "EXP_REQUIRED_ROLES",
    "ROLES",
    "AuthError",
    "Authenticator",
    "Principal",
    "mint_token",
]
