"""Which tables `db:` channels may publish.

`TableAllowList` is the operator's `--changes-tables`: only tables it names are ever
added to the publication; an empty list allows any table the caller may SELECT.
Whether a table is in the publication is asked on every subscribe, never remembered:
a table dropped and created again under the same name has left the publication, and
a remembered "published" would leave its new subscribers with no changes at all.
"""

from __future__ import annotations

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
