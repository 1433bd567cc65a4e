"""Which tables `db:` channels may publish, and which are known to be published.

`TableAllowList` is the operator's `--changes-tables`: only tables it names are ever
added to the publication; an empty list allows any table the caller may SELECT.
`PublishedTables` remembers, per table, that it is in the publication (with a usable
replica identity), so further subscribes to it skip that round trip; only the
caller's own privilege and RLS check stays per subscribe. Entries expire, so a table
an operator took out of the publication is added again within `ttl` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from fnmatch import fnmatchcase

# Schemas whose tables PostgreSQL never publishes (catalogs, TOAST, temporary tables):
# refused before any round trip. Unlogged tables are refused by the database.
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})


def unpublishable_schema(schema: str) -> str | None:
    """Why no table of `schema` can be published, or None (pure)."""
    if schema in SYSTEM_SCHEMAS:
        return "system catalogs cannot be replicated"
    if schema.startswith(("pg_temp", "pg_toast_temp")):
        return "temporary tables cannot be replicated"
    return None


class TableAllowList:
    """`schema.table` patterns (fnmatch globs, case-sensitive, matched part by part: the
    first dot separates the schema); a pattern without a dot means `public.<pattern>`,
    as a `db:<table>` channel without a schema filter does."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: list[tuple[str, str]] = []
        for text in patterns:
            text = text.strip()
            if not text:
                continue
            schema, dot, table = text.partition(".")
            if not dot:
                schema, table = "public", text
            if not schema or not table:
                raise ValueError(f"--changes-tables: {text!r} is not schema.table or table")
            self.patterns.append((schema, table))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def allows(self, schema: str, table: str) -> bool:
        if not self.patterns:
            return True
        return any(fnmatchcase(schema, s) and fnmatchcase(table, t) for s, t in self.patterns)


class PublishedTables:
    """(schema, table) -> known to be in the publication until a deadline."""

    def __init__(self, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._until: dict[tuple[str, str], float] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[key]
            return False
        return True

    def add(self, key: tuple[str, str]) -> None:
        if len(self._until) >= self.max_entries:
            self._until.clear()  # bounded; the next subscribes simply ask again
        self._until[key] = time.monotonic() + self.ttl
