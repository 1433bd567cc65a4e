"""One row change -> the `payload` of a `db:<table>` message, exactly as the
specification shows it, and what of a change's old row may be revealed (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pgrealtime.changes.model import RowChange


def cut_old(change: RowChange) -> dict[str, Any] | None:
    """`old` cut down to the key columns; None when the key is unknown (a table without
    primary key under REPLICA IDENTITY FULL): then no part of the old row is known to
    be safe to show, and the whole of it may be a row the subscriber may not see."""
    old = change.old
    if old is None or not change.key:
        return None
    return {name: old[name] for name in change.key if name in old}


def revealed(change: RowChange) -> RowChange:
    """The change as a subscriber may see it. On a table with row level security the
    row checked (if any) is the row as it is NOW, never the old one, so the `old` of
    an UPDATE or DELETE is cut to the key (None without a key) even under REPLICA
    IDENTITY FULL. Filters and payloads both work on this, so a row filter cannot
    probe a column that is not sent. Other changes come back as they are."""
    if change.rls and change.event in ("UPDATE", "DELETE") and change.old is not None:
        return dataclasses.replace(change, old=cut_old(change))
    return change


def build_payload(change: RowChange) -> dict[str, Any]:
    """`{"schema", "table", "commit_timestamp", "eventType", "new", "old"}`.

    `old` is null for INSERT, `new` null for DELETE, both for TRUNCATE (no row). For
    UPDATE and DELETE, `old` is the whole old row under REPLICA IDENTITY FULL and only
    the key columns otherwise (that is all PostgreSQL writes to the WAL); routing
    passes changes of tables with row level security through `revealed` first.
    """
    return {
        "schema": change.schema,
        "table": change.table,
        "commit_timestamp": change.commit_timestamp,
        "eventType": change.event,
        "new": change.new,
        "old": change.old,
    }
