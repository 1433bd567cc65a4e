import asyncpg

from pgrealtime.db.migrate import apply_migrations, migration_files


async def test_migrations_are_idempotent_and_recorded(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert await apply_migrations(conn) == []  # the template already has them
        versions = await conn.fetch(
            "SELECT version FROM realtime.schema_migrations ORDER BY version"
        )
        assert [r["version"] for r in versions] == [v for v, _ in migration_files()]
        assert await conn.fetchval("SHOW wal_level") == "logical"
    finally:
        await conn.close()


async def test_positions_are_given_to_messages_stored_before_they_existed(
    pg_admin_url: str,
) -> None:
    """Upgrading a database with history: each channel's messages get positions 1..n
    in their original order, and new messages go on from there."""
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute("DROP DATABASE IF EXISTS upgrade_positions")
    await admin.execute("CREATE DATABASE upgrade_positions")
    conn = await asyncpg.connect(pg_admin_url.replace("/postgres?", "/upgrade_positions?", 1))
    try:
        await apply_migrations(conn)  # creates the bookkeeping table
        await conn.execute("DROP SCHEMA realtime CASCADE")
        await conn.execute("CREATE SCHEMA realtime")
        await conn.execute(
            "CREATE TABLE realtime.schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in migration_files():
            if version >= "004":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO realtime.schema_migrations VALUES ($1)", version)
        await conn.execute("INSERT INTO realtime.channels (pattern) VALUES ('*')")
        for name in ["a", "b", "a", "a", "b"]:
            await conn.execute("SELECT realtime.publish($1, 'e', '{}')", name)
        assert "004_positions" in await apply_migrations(conn)
        rows = await conn.fetch("SELECT channel_name, position FROM realtime.messages ORDER BY seq")
        assert [(r["channel_name"], r["position"]) for r in rows] == [
            ("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)
        ]  # fmt: skip
        await conn.execute("SELECT realtime.publish('a', 'e', '{}')")
        assert await conn.fetchval("SELECT max(position) FROM realtime.messages") == 4
    finally:
        await conn.close()
        await admin.execute("DROP DATABASE IF EXISTS upgrade_positions WITH (FORCE)")
        await admin.close()
