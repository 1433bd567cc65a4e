"""Row changes built from decoded pgoutput messages: what a transaction changed, as
`RowChange`s with converted values, keys and the table's RLS flag.

The catalog is learnt as the stream goes: a Relation message brings the table's types
(looked up once in pg_type) and its primary key and RLS setting (pg_class). Values
convert per type (values.py); one that does not convert is delivered as the text
PostgreSQL printed, counted, never failing the batch.

Unchanged TOASTed columns: an UPDATE that leaves a large value alone does not carry
it. Under REPLICA IDENTITY FULL the old tuple has it (PostgreSQL inlines it).
Otherwise the builder fetches the current value by primary key, one query per table
per transaction. If the row changed again or is gone meanwhile, the value is the newer
one, or the column is left out of `new`.

TRUNCATE (when the publication publishes it, the default) becomes one change per
truncated table, with no row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg2
from psycopg2 import sql

from pgrealtime.changes.model import EventType, RowChange
from pgrealtime.changes.pgoutput import (
    IDENTITY_FULL,
    UNCHANGED_TOAST,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    TupleValue,
    Update,
)
from pgrealtime.changes.skips import SkipCounter
from pgrealtime.changes.slot import CONNECTION_ERRORS
from pgrealtime.changes.values import PgType, TypeRegistry, ValueAsText, format_utc

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _RelationMeta:
    """What the catalog says about a relation, beyond its Relation message."""

    pk_columns: tuple[str, ...]  # primary key, or replica identity index columns
    rls: bool


@dataclass(slots=True)
class Transaction:
    """One transaction's row messages, collected from Begin to Commit."""

    xid: int
    commit_time: Any
    rows: list[Insert | Update | Delete | Truncate] = field(default_factory=list)


class RowBuilder:
    """Builds a transaction's `RowChange`s; runs on the reader's thread only.

    The type registry lasts for the reader's life; the relations' metadata lasts one
    replication session (`new_session`: the server resends Relation messages)."""

    def __init__(self, excluded_schemas: frozenset[str], skips: SkipCounter) -> None:
        self.excluded_schemas = excluded_schemas
        self.skips = skips  # values kept as text, columns left out
        self.toast_lookups = 0  # queries made to fill unchanged TOAST values
        self._types = TypeRegistry()
        self._meta: dict[int, _RelationMeta] = {}

    def new_session(self) -> None:
        self._meta.clear()

    def on_relation(self, db: Any, relation: Relation) -> None:
        """A (new or changed) relation: learn its types and its key and RLS setting."""
        if relation.schema in self.excluded_schemas:
            return
        self._learn_types(db, [c.type_oid for c in relation.columns])
        with db.cursor() as c:
            c.execute(
                "SELECT c.relrowsecurity, "
                "  (SELECT array_agg(a.attname::text ORDER BY k.ord) "
                "   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
                "     AS k(attnum, ord) "
                "   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "   WHERE i.indrelid = c.oid AND i.indisprimary) "
                "FROM pg_class c WHERE c.oid = %s",
                (relation.relid,),
            )
            row = c.fetchone()
        rls = bool(row and row[0])
        primary = tuple(row[1]) if row and row[1] else ()
        if relation.replica_identity == IDENTITY_FULL or not relation.key_columns:
            pk = primary
        else:
            pk = relation.key_columns  # the replica identity (primary key or index)
        self._meta[relation.relid] = _RelationMeta(pk, rls)

    def _learn_types(self, db: Any, oids: list[int]) -> None:
        missing = self._types.needs(oids)
        while missing:
            with db.cursor() as c:
                c.execute(
                    "SELECT oid::int, typname::text, typtype::text, typcategory::text, "
                    "typelem::int, typbasetype::int, typdelim::text "
                    "FROM pg_type WHERE oid = ANY(%s::oid[])",
                    (sorted(missing),),
                )
                rows = c.fetchall()
            for row in rows:
                self._types.add(PgType(*row))
            found = {row[0] for row in rows}
            for oid in missing - found:  # vanished type: treat as text from now on
                self._types.add(PgType(oid, "unknown"))
            missing = self._types.needs(oids)

    # -- building changes -----------------------------------------------------------

    def _convert(self, relation: Relation, values: tuple[TupleValue, ...]) -> dict[str, Any]:
        converter = self._types.converter
        row: dict[str, Any] = {}
        for column, value in zip(relation.columns, values, strict=True):
            if value is UNCHANGED_TOAST:
                continue
            if value is None:
                row[column.name] = None
            elif isinstance(value, bytes):
                row[column.name] = "\\x" + value.hex()
            else:
                try:
                    row[column.name] = converter(column.type_oid)(value)  # type: ignore[arg-type]
                except Exception as exc:  # one value costs itself, never the batch
                    row[column.name] = self._as_text(relation, column.name, value, exc)  # type: ignore[arg-type]
        return row

    def _as_text(self, relation: Relation, column: str, text: str, exc: Exception) -> str:
        """A value that did not convert (too deeply nested JSON, or a converter bug):
        delivered as the text PostgreSQL printed, counted and logged (not flooded)."""
        why = str(exc) if isinstance(exc, ValueAsText) else f"{type(exc).__name__}: {exc}"
        self.skips.add(
            "values_as_text",
            f"{relation.schema}.{relation.name}.{column} delivered as text ({why})",
        )
        return text

    def _key_columns(self, relation: Relation, values: tuple[TupleValue, ...]) -> dict[str, Any]:
        return {
            c.name: v
            for c, v in zip(relation.columns, values, strict=True)
            if c.is_key and v is not UNCHANGED_TOAST
        }

    def build(self, db: Any, tx: Transaction, commit: Commit) -> list[RowChange]:
        timestamp = format_utc(commit.commit_time)
        filled = self._fill_toast(db, tx.rows)
        changes: list[RowChange] = []
        for i, message in enumerate(tx.rows):
            if isinstance(message, Truncate):
                changes.extend(self._truncate_changes(tx, commit, timestamp, message))
                continue
            relation = message.relation
            meta = self._meta.get(relation.relid) or _RelationMeta(relation.key_columns, False)
            event: EventType
            if isinstance(message, Insert):
                event, new_values, old = "INSERT", message.new, None
            elif isinstance(message, Update):
                event, new_values = "UPDATE", filled.get(i, message.new)
                if message.old_kind == "O":
                    old = self._convert(relation, message.old)  # type: ignore[arg-type]
                else:
                    source = message.old if message.old is not None else message.new
                    old = self._key_columns_converted(relation, source)
            else:
                event, new_values = "DELETE", None
                if message.old_kind == "O":
                    old = self._convert(relation, message.old)
                else:
                    old = self._key_columns_converted(relation, message.old)
            key_source = message.old if isinstance(message, Delete) else new_values
            names = [c.name for c in relation.columns]
            key: dict[str, str | None] = {}
            for name in meta.pk_columns:
                if name in names:
                    value = key_source[names.index(name)]  # type: ignore[index]
                    if isinstance(value, str):
                        key[name] = value
            if len(key) != len(meta.pk_columns):
                key = {}
            changes.append(
                RowChange(
                    schema=relation.schema,
                    table=relation.name,
                    event=event,
                    commit_timestamp=timestamp,
                    lsn=commit.end_lsn,
                    xid=tx.xid,
                    new=None if new_values is None else self._convert(relation, new_values),
                    old=old,
                    key=key,
                    relid=relation.relid,
                    rls=meta.rls,
                    identity_full=relation.replica_identity == IDENTITY_FULL,
                )
            )
        return changes

    def _truncate_changes(
        self, tx: Transaction, commit: Commit, timestamp: str, message: Truncate
    ) -> list[RowChange]:
        """One TRUNCATE change per truncated table (a TRUNCATE of several tables, or
        with CASCADE, is one message). No row: `new`, `old` and `key` stay empty."""
        changes = []
        for relation in message.relations:
            if relation.schema in self.excluded_schemas:
                continue
            meta = self._meta.get(relation.relid)
            changes.append(
                RowChange(
                    schema=relation.schema,
                    table=relation.name,
                    event="TRUNCATE",
                    commit_timestamp=timestamp,
                    lsn=commit.end_lsn,
                    xid=tx.xid,
                    new=None,
                    old=None,
                    relid=relation.relid,
                    rls=bool(meta and meta.rls),
                    identity_full=relation.replica_identity == IDENTITY_FULL,
                )
            )
        return changes

    def _key_columns_converted(
        self, relation: Relation, values: tuple[TupleValue, ...]
    ) -> dict[str, Any]:
        types = {c.name: c.type_oid for c in relation.columns}
        return {
            name: None if value is None else self._convert_one(relation, name, types[name], value)
            for name, value in self._key_columns(relation, values).items()
        }

    def _convert_one(self, relation: Relation, name: str, type_oid: int, value: Any) -> Any:
        if isinstance(value, bytes):
            return "\\x" + value.hex()
        try:
            return self._types.converter(type_oid)(value)
        except Exception as exc:
            return self._as_text(relation, name, value, exc)

    def _fill_toast(
        self, db: Any, rows: list[Insert | Update | Delete | Truncate]
    ) -> dict[int, tuple[TupleValue, ...]]:
        """New tuples of UPDATEs with their unchanged TOASTed values filled in, by row
        index in the transaction. From the old tuple under REPLICA IDENTITY FULL,
        else one primary-key lookup per table."""
        filled: dict[int, tuple[TupleValue, ...]] = {}
        lookups: dict[int, list[int]] = {}  # relid -> row indexes needing a fetch
        for i, message in enumerate(rows):
            if not isinstance(message, Update) or UNCHANGED_TOAST not in message.new:
                continue
            values = list(message.new)
            if message.old_kind == "O" and message.old is not None:
                for j, value in enumerate(values):
                    if value is UNCHANGED_TOAST and message.old[j] is not UNCHANGED_TOAST:
                        values[j] = message.old[j]
            filled[i] = tuple(values)
            if UNCHANGED_TOAST in values:
                lookups.setdefault(message.relation.relid, []).append(i)
        for indexes in lookups.values():
            try:
                self._fetch_unchanged(db, rows, indexes, filled)
            except CONNECTION_ERRORS:
                raise
            except psycopg2.Error as exc:
                # e.g. the table or a column was dropped or renamed since the change,
                # or a key does not fit the row type: the values stay out of `new`,
                # as for a row deleted meanwhile
                relation = rows[indexes[0]].relation
                self.skips.add(
                    "toast_fill_failures",
                    f"unchanged TOAST values of {relation.schema}.{relation.name} left out "
                    f"of `new` ({type(exc).__name__}: {(exc.pgerror or str(exc)).strip()})",
                    len(indexes),
                )
        return filled

    def _fetch_unchanged(
        self,
        db: Any,
        rows: list[Insert | Update | Delete | Truncate],
        indexes: list[int],
        filled: dict[int, tuple[TupleValue, ...]],
    ) -> None:
        relation = rows[indexes[0]].relation
        meta = self._meta.get(relation.relid)
        pk = meta.pk_columns if meta else ()
        names = [c.name for c in relation.columns]
        if not pk or any(p not in names for p in pk):
            log.warning(
                "change feed: cannot fill unchanged TOAST values of %s.%s (no primary key)",
                relation.schema,
                relation.name,
            )
            return
        pk_pos = [names.index(p) for p in pk]
        wanted = sorted(
            {j for i in indexes for j, v in enumerate(filled[i]) if v is UNCHANGED_TOAST}
        )
        keys = []
        for i in indexes:
            values = filled[i]
            if any(not isinstance(values[p], str) for p in pk_pos):
                continue
            keys.append({names[p]: values[p] for p in pk_pos})
        if not keys:
            return
        table = sql.SQL("{}.{}").format(
            sql.Identifier(relation.schema), sql.Identifier(relation.name)
        )
        query = sql.SQL(
            "SELECT {pk}, {cols} FROM {table} AS t "
            "JOIN jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS k ON {join}"
        ).format(
            pk=sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(p)) for p in pk),
            cols=sql.SQL(", ").join(
                sql.SQL("t.{}::text").format(sql.Identifier(names[j])) for j in wanted
            ),
            table=table,
            join=sql.SQL(" AND ").join(
                sql.SQL("t.{0} = k.{0}").format(sql.Identifier(p)) for p in pk
            ),
        )
        self.toast_lookups += 1
        with db.cursor() as c:
            c.execute(query, (orjson.dumps(keys).decode(),))
            found = {tuple(r[: len(pk)]): r[len(pk) :] for r in c.fetchall()}
        for i in indexes:
            values = list(filled[i])
            current = found.get(tuple(values[p] for p in pk_pos))
            if current is None:
                continue  # the row is gone: the column stays out of `new`
            for j, value in zip(wanted, current, strict=True):
                if values[j] is UNCHANGED_TOAST:
                    values[j] = value
            filled[i] = tuple(values)
