"""Replica identity administration against the real PostgreSQL: name parsing, quoting,
partitions, and the errors the command and the REST route turn into answers."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from pgrealtime.changes import feed as feed_module
from pgrealtime.changes.admin import BadTableName, parse_table_name
from pgrealtime.changes.feed import (
    ReplicaIdentityRequired,
    replica_identity,
    set_replica_identity_full,
)


async def identities(db: asyncpg.Connection, *names: str) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT relname::text, relreplident::text FROM pg_class WHERE relname = ANY($1)",
        list(names),
    )
    return {r[0]: r[1] for r in rows}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("public.posts", ("public", "posts")),
        ("posts", ("public", "posts")),
        ("Shop.Orders", ("Shop", "Orders")),  # case-sensitive, like db:<table> names
        ("shop.my.table", ("shop", "my.table")),  # the first dot separates the schema
        ('s."q"', ("s", '"q"')),  # quotes are part of the name, not SQL syntax
        ("x" * 63, ("public", "x" * 63)),
    ],
)
def test_parse_table_name(text: str, expected: tuple[str, str]) -> None:
    assert parse_table_name(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "table name is empty"),
        ("public.", "table name is empty"),
        (".posts", "schema name is empty"),
        ("public.a\x00b", "NUL"),
        ("x" * 64, "longer than 63 bytes"),  # PostgreSQL would truncate it to another name
        ("public." + "é" * 32, "longer than 63 bytes"),  # bytes, not characters
    ],
)
def test_parse_table_name_refuses(text: str, message: str) -> None:
    with pytest.raises(BadTableName, match=message):
        parse_table_name(text)


async def test_odd_names_are_quoted_not_spliced(db: asyncpg.Connection) -> None:
    schema, table = "My Schema", 'Odd "T"; DROP TABLE victim; --'
    await db.execute('CREATE SCHEMA "My Schema"')
    await db.execute('CREATE TABLE "My Schema"."Odd ""T""; DROP TABLE victim; --" (a int)')
    await db.execute("CREATE TABLE victim (id int PRIMARY KEY)")
    assert await replica_identity(db, schema, table) == "default"
    assert await set_replica_identity_full(db, schema, table) == "default"
    assert await replica_identity(db, schema, table) == "full"
    assert await set_replica_identity_full(db, schema, table, full=False) == "full"
    assert await replica_identity(db, schema, table) == "default"
    with pytest.raises(LookupError):
        await set_replica_identity_full(db, "public", "victim; DROP TABLE victim")
    assert await db.fetchval("SELECT to_regclass('public.victim') IS NOT NULL")


async def test_unknown_table_and_non_tables(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE posts (id int PRIMARY KEY)")
    await db.execute("CREATE VIEW posts_view AS SELECT * FROM posts")
    for schema, table in (("public", "nope"), ("public", "POSTS"), ("nope", "posts"),
                          ("public", "posts_view")):  # fmt: skip
        with pytest.raises(LookupError, match="does not exist"):
            await replica_identity(db, schema, table)
        with pytest.raises(LookupError, match="does not exist"):
            await set_replica_identity_full(db, schema, table)


async def test_partitioned_table_changes_its_partitions_too(db: asyncpg.Connection) -> None:
    await db.execute(
        """
        CREATE TABLE events (at date NOT NULL, body text) PARTITION BY RANGE (at);
        CREATE TABLE events_2024 PARTITION OF events
          FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
        CREATE TABLE events_2024_h1 PARTITION OF events_2024
          FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
        CREATE TABLE events_2025 PARTITION OF events
          FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        """
    )
    names = ("events", "events_2024", "events_2024_h1", "events_2025")
    has_identity = "SELECT realtime.has_replica_identity('events'::regclass)"
    assert not await db.fetchval(has_identity)  # no key: could not be published
    await set_replica_identity_full(db, "public", "events")
    assert await identities(db, *names) == dict.fromkeys(names, "f")
    assert await db.fetchval(has_identity)  # now it can
    await set_replica_identity_full(db, "public", "events", full=False)
    assert await identities(db, *names) == dict.fromkeys(names, "d")


async def test_works_through_a_pool(db_url: str, db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE t (a int)")
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        assert await set_replica_identity_full(pool, "public", "t") == "default"
        assert await replica_identity(pool, "public", "t") == "full"
    finally:
        await pool.close()


async def test_not_the_owner(db_url: str, db: asyncpg.Connection) -> None:
    role = f"ri_user_{os.getpid()}"
    await db.execute("CREATE TABLE t (a int)")
    await db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        other = await asyncpg.connect(db_url.replace("//postgres@", f"//{role}@", 1))
        try:
            assert await replica_identity(other, "public", "t") == "default"  # catalog is public
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await set_replica_identity_full(other, "public", "t")
        finally:
            await other.close()
        assert await replica_identity(db, "public", "t") == "default"
    finally:
        await db.execute(f"DROP ROLE {role}")


async def test_a_locked_table_is_not_waited_for_forever(
    db_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "IDENTITY_LOCK_TIMEOUT", "200ms")
    await db.execute("CREATE TABLE t (a int)")
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            async with asyncio.timeout(10):
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await set_replica_identity_full(db, "public", "t")
    finally:
        await holder.close()
    assert await replica_identity(db, "public", "t") == "default"
    assert await set_replica_identity_full(db, "public", "t") == "default"  # lock gone


async def test_default_is_refused_where_it_would_break_writes(db: asyncpg.Connection) -> None:
    await db.execute(
        """
        CREATE TABLE keyless (a int);
        CREATE TABLE keyed (id int PRIMARY KEY);
        CREATE TABLE unpublished (a int);
        CREATE TABLE parts (at int NOT NULL) PARTITION BY RANGE (at);
        CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (10);
        CREATE TABLE inserts_only (a int);
        """
    )
    for table in ("keyless", "keyed", "unpublished", "parts", "inserts_only"):
        await set_replica_identity_full(db, "public", table)
    await db.execute(
        "CREATE PUBLICATION ri_pub FOR TABLE keyless, keyed, parts"
        " WITH (publish_via_partition_root = true);"
        "CREATE PUBLICATION ri_ins FOR TABLE inserts_only WITH (publish = 'insert')"
    )
    for table in ("keyless", "parts_1", "parts"):  # a partition of a published parent too
        with pytest.raises(ReplicaIdentityRequired, match=r"is published \(ri_pub\)"):
            await set_replica_identity_full(db, "public", table, full=False)
        assert await replica_identity(db, "public", table) == "full"  # nothing changed
    await db.execute("INSERT INTO keyless VALUES (1); UPDATE keyless SET a = 2")  # still works
    for table in ("keyed", "unpublished", "inserts_only"):
        assert await set_replica_identity_full(db, "public", table, full=False) == "full"
        assert await replica_identity(db, "public", table) == "default"
