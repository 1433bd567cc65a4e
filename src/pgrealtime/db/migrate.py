"""Bring a database to this version's schema: append-only schema files, then functions.

Two kinds of SQL, because they change differently:

* `db/schema/NNN_*.sql` hold tables, indexes, policies, grants and seed rows. Each
  runs once, in its own transaction, and is recorded in `realtime.schema_migrations`;
  the folder is append-only (a change is a new file, never an edit).
* `db/functions/*.sql` hold today's definition of every function (CREATE OR REPLACE,
  with its grants and the triggers that call it). All of them are re-applied at every
  start-up, after the schema files, in one transaction and in name order, so changing
  a function is editing its file. A file whose change alters a function's arguments or
  return type starts with the DROP FUNCTION IF EXISTS of the old signature.

Everything runs under one advisory lock, so several server processes starting together
apply each schema file exactly once. A database migrated before the schema was squashed
(the thirteen files `001_core` .. `013_channel_webhook_secrets`) already has everything
`001_baseline` creates: it is recorded as at `001_baseline` without running it.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_130_001  # arbitrary constant shared by every pgrealtime process

BASELINE = "001_baseline"
# What 001_baseline squashes: a database with all of them recorded is at the baseline.
LEGACY_VERSIONS = frozenset(
    {
        "001_core",
        "002_webhooks",
        "003_changes",
        "004_positions",
        "005_subscribe_batch",
        "006_publish_fast",
        "007_visible_rows_fast",
        "008_webhooks_fast",
        "009_webhook_recovery",
        "010_drop_unused_message_index",
        "011_one_before_insert_trigger",
        "012_publish_hardening",
        "013_channel_webhook_secrets",
    }
)


class MigrationError(RuntimeError):
    """The database is in a state this version cannot bring forward."""


def _sql_files(folder_name: str) -> list[tuple[str, str]]:
    folder = resources.files("pgrealtime.db") / folder_name
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


def schema_files() -> list[tuple[str, str]]:
    """(version, sql) for every bundled schema file, in order."""
    return _sql_files("schema")


def function_files() -> list[tuple[str, str]]:
    """(name, sql) for every bundled functions file, in the order they are applied."""
    return _sql_files("functions")


async def _recognise_legacy(conn: asyncpg.Connection, done: set[str]) -> None:
    """Record a database migrated by the pre-squash files as at the baseline."""
    legacy = done & LEGACY_VERSIONS
    if BASELINE in done or not legacy:
        return
    missing = sorted(LEGACY_VERSIONS - legacy)
    if missing:
        raise MigrationError(
            "this database was migrated by an older pgrealtime and stopped before "
            f"{missing[0]}; run that version's `pgrealtime migrate` to the end first"
        )
    await conn.execute("INSERT INTO realtime.schema_migrations (version) VALUES ($1)", BASELINE)
    done.add(BASELINE)
    log.info("pre-squash schema recognised", extra={"version": BASELINE})


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply every schema file not yet recorded, then every functions file; return
    the schema versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS realtime;"
            "CREATE TABLE IF NOT EXISTS realtime.schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"] for r in await conn.fetch("SELECT version FROM realtime.schema_migrations")
        }
        await _recognise_legacy(conn, done)
        pending = [(version, sql) for version, sql in schema_files() if version not in done]
        if pending:
            log.info("applying migrations", extra={"count": len(pending)})
        for version, sql in pending:
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO realtime.schema_migrations (version) VALUES ($1)", version
                )
            log.info("migration applied", extra={"version": version})
            applied_now.append(version)
        async with conn.transaction():
            for _name, sql in function_files():
                await conn.execute(sql)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
