import asyncpg

from pgrealtime.db.migrate import apply_migrations


async def test_migrations_are_idempotent_and_recorded(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert await apply_migrations(conn) == []  # the template already has them
        versions = await conn.fetch("SELECT version FROM realtime.schema_migrations")
        assert [r["version"] for r in versions][0] == "001_core"
        assert await conn.fetchval("SHOW wal_level") == "logical"
    finally:
        await conn.close()
