"""Plain numbered SQL migrations, applied in order and recorded in a table.

Each file runs in its own transaction under an advisory lock, so several server
processes starting together apply each file exactly once.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_130_001  # arbitrary constant shared by every pgrealtime process


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every bundled migration, in order."""
    folder = resources.files("pgrealtime.db") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied now."""
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
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO realtime.schema_migrations (version) VALUES ($1)", version
                )
            log.info("migration applied", extra={"version": version})
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
