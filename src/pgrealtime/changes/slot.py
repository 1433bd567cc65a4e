"""The replication slot and the publication: checked and created before streaming.

`prepare` runs once at start on an ordinary connection: it says why change
notifications cannot work (wal_level, a user not allowed to replicate, a slot of another
database) as `FeedDisabled`, creates the publication (empty: tables are added as they
are subscribed to) and the slot if missing, and lists published tables whose UPDATE and
DELETE PostgreSQL refuses. `connect` is the one way the change feed opens a psycopg2
connection, with the session options `values.py` parses by.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

log = logging.getLogger(__name__)

# Every session of the reader prints values the way values.py parses them,
# whatever the server's or the database's defaults are.
SESSION_OPTIONS = (
    "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=postgres "
    "-c bytea_output=hex -c extra_float_digits=1"
)


def connect(dsn: str, **kwargs: Any) -> Any:
    """A psycopg2 connection (ordinary, or replication through `connection_factory`)
    whose session prints values the way values.py parses them."""
    return psycopg2.connect(dsn, options=SESSION_OPTIONS, **kwargs)


WAL_LEVEL_REASON = (
    "change notifications need wal_level=logical: "
    "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
)


def wal_level_problem(wal_level: str) -> str | None:
    """Why change notifications cannot work with this wal_level, or None (pure)."""
    return None if wal_level.strip().lower() == "logical" else WAL_LEVEL_REASON


def role_problem(user: str, is_superuser: bool, can_replicate: bool) -> str | None:
    if is_superuser or can_replicate:
        return None
    return (
        f"change notifications need a database user allowed to replicate: "
        f'ALTER ROLE "{user}" REPLICATION; (it also needs to own the tables it '
        f"publishes, or to be a superuser)"
    )


class FeedDisabled(Exception):
    """Change notifications cannot run against this database; `reason` says why and how
    to fix it. The rest of the server keeps working."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Published tables whose UPDATE and DELETE PostgreSQL refuses: no usable replica
# identity (no primary key and identity DEFAULT, a dropped identity index, or NOTHING),
# partitions included. The feed never adds such a table, but a table can lose its key
# after being added, and a FOR ALL TABLES publication (earlier versions) has them all.
PUBLISHED_WITHOUT_IDENTITY = """
SELECT DISTINCT p.schemaname || '.' || p.tablename
FROM pg_publication_tables p
JOIN pg_namespace n ON n.nspname = p.schemaname
JOIN pg_class r ON r.relnamespace = n.oid AND r.relname = p.tablename
JOIN pg_class c ON c.oid = r.oid OR c.oid IN (
  SELECT t.relid FROM pg_partition_tree(r.oid) t WHERE t.isleaf)
WHERE p.pubname = %s AND c.relkind = 'r'
  AND NOT (c.relreplident = 'f'
    OR (c.relreplident = 'd' AND EXISTS (
          SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
    OR (c.relreplident = 'i' AND EXISTS (
          SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
ORDER BY 1 LIMIT 100
"""


@dataclass(slots=True)
class Prepared:
    """What `prepare` found: whether the publication is FOR ALL TABLES (made by an
    earlier version; left alone), and the published tables whose UPDATE and DELETE
    PostgreSQL refuses because of it."""

    all_tables: bool
    without_identity: list[str]


def prepare(dsn: str, slot: str, publication: str) -> Prepared:
    """Check the server can do logical replication, then create the publication (empty:
    tables are added as they are subscribed to) and the slot if missing. Raises
    FeedDisabled with a reason when it cannot; connection errors propagate."""
    conn = connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            problem = wal_level_problem(cur.fetchone()[0])
            if problem:
                raise FeedDisabled(problem)
            cur.execute(
                "SELECT current_user, rolsuper, rolreplication FROM pg_roles "
                "WHERE rolname = current_user"
            )
            problem = role_problem(*cur.fetchone())
            if problem:
                raise FeedDisabled(problem)
            cur.execute(
                "SELECT puballtables FROM pg_publication WHERE pubname = %s",
                (publication,),
            )
            row = cur.fetchone()
            all_tables = bool(row and row[0])
            if row is None:
                # Never FOR ALL TABLES: that makes PostgreSQL refuse UPDATE and DELETE on
                # every table without a primary key, subscribed to or not.
                try:
                    cur.execute(
                        sql.SQL(
                            "CREATE PUBLICATION {} WITH (publish_via_partition_root = true)"
                        ).format(sql.Identifier(publication))
                    )
                    log.info("created publication %s (empty)", publication)
                except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
                    pass  # another process created it meanwhile (the catalog's index may say so)
                except psycopg2.errors.InsufficientPrivilege as exc:
                    raise FeedDisabled(
                        f"cannot create publication {publication}: "
                        f"{(exc.pgerror or str(exc)).strip()}; grant CREATE on the database "
                        f"to the server's user, or as a superuser run: CREATE PUBLICATION "
                        f'"{publication}" WITH (publish_via_partition_root = true);'
                    ) from exc
            cur.execute(
                "SELECT database, plugin FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            row = cur.fetchone()
            cur.execute("SELECT current_database()")
            database = cur.fetchone()[0]
            if row is None:
                try:
                    cur.execute(
                        "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
                    )
                    log.info("created replication slot %s", slot)
                except psycopg2.errors.DuplicateObject:
                    pass
                except psycopg2.DatabaseError as exc:  # e.g. max_replication_slots reached
                    raise FeedDisabled(
                        f"cannot create replication slot {slot}: "
                        f"{(exc.pgerror or str(exc)).strip()}"
                    ) from exc
            elif row[0] != database or row[1] != "pgoutput":
                raise FeedDisabled(
                    f"replication slot {slot} belongs to database {row[0]} "
                    f"(plugin {row[1]}), not {database} (pgoutput): choose another slot name"
                )
            cur.execute(PUBLISHED_WITHOUT_IDENTITY, (publication,))
            return Prepared(all_tables, [r[0] for r in cur.fetchall()])
    finally:
        conn.close()


def drop_slot(dsn: str, slot: str) -> bool:
    """Drop the slot (it retains WAL until dropped). Returns whether it existed."""
    conn = connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return cur.rowcount > 0
    finally:
        conn.close()


# Errors that say the connection is gone, not that a row is bad: those are retried
# for ever (with backoff), never counted towards skipping a transaction.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, OSError)
