"""Where a provider keeps the role and the user id in its tokens: claim paths.

Providers differ: Supabase puts `role` at the top, others nest it (`app_metadata.role`)
or name it with a URL (Auth0's namespaced claims, which contain dots themselves). A
path is read as the whole name first, then as dot-separated steps into objects.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at `path` ("role", "app_metadata.role", "https://x.io/role"), or
    MISSING. A key spelled exactly like the whole path wins over the nested reading."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return MISSING
        value = value[step]
    return value
