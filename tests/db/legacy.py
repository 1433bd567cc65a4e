"""The thirteen migrations of the first development cycle, kept as a test fixture.

`001_baseline` squashes them; these helpers build a database the way they did, so tests
can show the squash changed nothing and that such a database upgrades cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

LEGACY_DIR = Path(__file__).parent / "legacy_migrations"


def legacy_files() -> list[tuple[str, str]]:
    """(version, sql) of every legacy migration, in order."""
    return [(p.stem, p.read_text()) for p in sorted(LEGACY_DIR.glob("*.sql"))]


async def apply_legacy_migrations(conn: asyncpg.Connection, until: str | None = None) -> list[str]:
    """Apply the legacy migrations not yet recorded (those before `until`, if given),
    recorded as the old migrate did; return the versions applied now."""
    await conn.execute(
        "CREATE SCHEMA IF NOT EXISTS realtime;"
        "CREATE TABLE IF NOT EXISTS realtime.schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = await conn.fetch("SELECT version FROM realtime.schema_migrations")
    done = {r["version"] for r in rows}
    applied: list[str] = []
    for version, sql in legacy_files():
        if until is not None and version >= until:
            break
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO realtime.schema_migrations VALUES ($1)", version)
        applied.append(version)
    return applied


def database_url(pg_admin_url: str, name: str) -> str:
    """The URL of database `name` on the test cluster."""
    return pg_admin_url.replace("/postgres?", f"/{name}?", 1)


@asynccontextmanager
async def empty_database(pg_admin_url: str, name: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database `name`, dropped afterwards."""
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(database_url(pg_admin_url, name))
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
