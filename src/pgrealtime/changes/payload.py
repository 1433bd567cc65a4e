"""One row change -> the `payload` of a `db:<table>` message, exactly as the
specification shows it (pure)."""

from __future__ import annotations

from typing import Any

from pgrealtime.changes.model import RowChange


def build_payload(change: RowChange, *, key_only_old: bool = False) -> dict[str, Any]:
    """`{"schema", "table", "commit_timestamp", "eventType", "new", "old"}`.

    `old` is null for INSERT, `new` null for DELETE, both for TRUNCATE (no row). For
    UPDATE and DELETE, `old` is
    the whole old row under REPLICA IDENTITY FULL and only the key columns otherwise
    (that is all PostgreSQL writes to the WAL). `key_only_old` cuts `old` down to the
    key columns even under FULL: used for DELETEs on tables with row level security,
    whose old row can no longer be checked against the policies.
    """
    old = change.old
    if key_only_old and old is not None and change.key:
        old = {name: old[name] for name in change.key if name in old}
    return {
        "schema": change.schema,
        "table": change.table,
        "commit_timestamp": change.commit_timestamp,
        "eventType": change.event,
        "new": change.new,
        "old": old,
    }
