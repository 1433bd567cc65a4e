"""Table names of the replica-identity admin tools: the command

    pgrealtime replica-identity <schema>.<table> --full | --default

(pgrealtime.cli.replica_identity) and the REST route (pgrealtime.api.tables) share the
name parsing here, so a name that works in one works in the other. A table without a
primary key can only be subscribed to with REPLICA IDENTITY FULL (see
visibility.publish_table); FULL also makes UPDATE and DELETE changes carry the whole
old row.
"""

from __future__ import annotations

MAX_NAME_BYTES = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1)
SETTABLE = ("full", "default")


class BadTableName(ValueError):
    """The text is not `schema.table` (or `table`); the message says why."""


def parse_table_name(text: str) -> tuple[str, str]:
    """'shop.orders' -> ('shop', 'orders'); 'orders' -> ('public', 'orders').

    Names are taken as written (case-sensitive, no quotes), like `db:<table>` channel
    names: the first dot separates the schema, so a table name may contain dots but a
    schema name may not. Raises BadTableName."""
    schema, dot, table = text.partition(".")
    if not dot:
        schema, table = "public", text
    for part, what in ((schema, "schema"), (table, "table")):
        if not part:
            raise BadTableName(f"{what} name is empty in {text!r}; expected <schema>.<table>")
        if "\x00" in part:
            raise BadTableName(f"{what} name contains a NUL character")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise BadTableName(f"{what} name is longer than {MAX_NAME_BYTES} bytes")
    return schema, table
