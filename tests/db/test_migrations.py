import asyncpg
from tests.db.legacy import apply_legacy_migrations, database_url

from pgrealtime.db.migrate import BASELINE, apply_migrations, schema_files


async def test_migrations_are_idempotent_and_recorded(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert await apply_migrations(conn) == []  # the template already has them
        versions = await conn.fetch(
            "SELECT version FROM realtime.schema_migrations ORDER BY version"
        )
        assert [r["version"] for r in versions] == [v for v, _ in schema_files()]
        assert await conn.fetchval("SHOW wal_level") == "logical"
    finally:
        await conn.close()


async def test_positions_are_given_to_messages_stored_before_they_existed(
    pg_admin_url: str,
) -> None:
    """Upgrading a database with history: each channel's messages get positions 1..n
    in their original order, and new messages go on from there. (The upgrade that
    added positions is legacy migration 004; today's migrate takes the result over.)"""
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute("DROP DATABASE IF EXISTS upgrade_positions")
    await admin.execute("CREATE DATABASE upgrade_positions")
    conn = await asyncpg.connect(database_url(pg_admin_url, "upgrade_positions"))
    try:
        await apply_legacy_migrations(conn, until="004")
        await conn.execute("INSERT INTO realtime.channels (pattern) VALUES ('*')")
        for name in ["a", "b", "a", "a", "b"]:
            await conn.execute("SELECT realtime.publish($1, 'e', '{}')", name)
        assert "004_positions" in await apply_legacy_migrations(conn)
        later = [v for v, _ in schema_files() if v != BASELINE]
        assert await apply_migrations(conn) == later  # recorded as at the baseline
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM realtime.schema_migrations WHERE version = $1", BASELINE
            )
            == 1
        )
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
