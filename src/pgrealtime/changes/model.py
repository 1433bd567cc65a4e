"""The unit the change feed hands to the server: one committed row change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["INSERT", "UPDATE", "DELETE", "TRUNCATE"]
EVENT_TYPES: tuple[EventType, ...] = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")


@dataclass(slots=True)
class RowChange:
    """One row change of a committed transaction, values already JSON-friendly.

    `key` holds the primary key (or replica identity index) columns as PostgreSQL's
    own text, so a visibility check can look the row up exactly whatever its types.
    `rls` says whether the table had row level security enabled when the change was
    read: only then is a per-row visibility query needed.

    A TRUNCATE is one change per truncated table, with `new`, `old` and `key` empty:
    it empties the table and carries no row.
    """

    schema: str
    table: str
    event: EventType
    commit_timestamp: str
    lsn: int  # end LSN of the transaction: where the reader resumes after it
    xid: int
    new: dict[str, Any] | None
    old: dict[str, Any] | None
    key: dict[str, str | None] = field(default_factory=dict)
    relid: int = 0
    rls: bool = False
    identity_full: bool = False
    # its place in its transaction (0, 1, ...), set by the feed: with `lsn` it names the
    # change exactly, so a change read twice (a failed batch, a new slot holder) is
    # delivered once (changes/cluster.py)
    index: int = 0

    @property
    def row(self) -> dict[str, Any] | None:
        """The row a filter looks at: the new row, or the old one for a DELETE (None for
        a TRUNCATE, so row filters never match it)."""
        return self.old if self.event == "DELETE" else self.new
