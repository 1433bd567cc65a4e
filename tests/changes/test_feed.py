"""The change feed against the real PostgreSQL: what arrives, and what is never lost."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from pgrealtime.changes.feed import ChangeFeed, set_replica_identity_full
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.payload import build_payload
from pgrealtime.changes.pgoutput import lsn_from_str
from pgrealtime.changes.slot import WAL_LEVEL_REASON, role_problem, wal_level_problem
from pgrealtime.changes.visibility import TableNotPublishable
from pgrealtime.config import FeedSettings
from pgrealtime.db.embedded import EmbeddedPostgres

from .conftest import Collector, FeedFactory, publish

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")

POSTS = """
CREATE TABLE posts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  title text NOT NULL,
  content text,
  "createdAt" timestamptz NOT NULL DEFAULT now()
)"""


async def confirmed_lsn(db: asyncpg.Connection, slot: str) -> int:
    text = await db.fetchval(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot
    )
    return lsn_from_str(text)


async def test_insert_update_delete_payloads(started, db) -> None:
    _, collector = started
    await db.execute(POSTS)
    await publish(db, "posts")
    before = datetime.now(UTC)
    post_id = await db.fetchval(
        "INSERT INTO posts (title, content) VALUES ('New Post', 'Hello world') RETURNING id"
    )
    await db.execute("UPDATE posts SET title = 'Updated Title' WHERE id = $1", post_id)
    await db.execute("DELETE FROM posts WHERE id = $1", post_id)
    created = await db.fetchval("SELECT now()")
    insert, update, delete = await collector.wait_for(3)

    pid = str(post_id)
    p = build_payload(insert)
    assert list(p) == ["schema", "table", "commit_timestamp", "eventType", "new", "old"]
    assert (p["schema"], p["table"], p["eventType"], p["old"]) == (
        "public",
        "posts",
        "INSERT",
        None,
    )
    assert p["new"]["id"] == pid
    assert p["new"]["title"] == "New Post"
    assert p["new"]["content"] == "Hello world"
    assert RFC3339_UTC.match(p["new"]["createdAt"]), p["new"]["createdAt"]
    assert RFC3339_UTC.match(p["commit_timestamp"])
    committed = datetime.fromisoformat(p["commit_timestamp"])
    assert before - timedelta(seconds=5) < committed <= created + timedelta(seconds=5)

    p = build_payload(update)
    assert p["eventType"] == "UPDATE"
    assert p["new"]["title"] == "Updated Title" and p["new"]["id"] == pid
    assert p["old"] == {"id": pid}  # default replica identity: the key only

    p = build_payload(delete)
    assert (p["eventType"], p["new"]) == ("DELETE", None)
    assert p["old"] == {"id": pid}

    assert insert.lsn < update.lsn < delete.lsn
    assert len({insert.xid, update.xid, delete.xid}) == 3
    assert insert.key == {"id": pid} and not insert.rls


async def test_replica_identity_full_old_row(started, db) -> None:
    _, collector = started
    await db.execute(POSTS)
    await publish(db, "posts")
    await set_replica_identity_full(db, "public", "posts")
    assert (
        await db.fetchval("SELECT relreplident::text FROM pg_class WHERE oid = 'posts'::regclass")
        == "f"
    )
    post_id = str(await db.fetchval("INSERT INTO posts (title) VALUES ('Old Title') RETURNING id"))
    await db.execute("UPDATE posts SET title = 'Updated Title'")
    await db.execute("DELETE FROM posts")
    _, update, delete = await collector.wait_for(3)
    assert update.old["title"] == "Old Title" and update.old["id"] == post_id
    assert set(update.old) == {"id", "title", "content", "createdAt"}
    assert delete.old["title"] == "Updated Title"
    assert update.identity_full
    with pytest.raises(LookupError):
        await set_replica_identity_full(db, "public", "nope")
    await set_replica_identity_full(db, "public", "posts", full=False)
    assert (
        await db.fetchval("SELECT relreplident::text FROM pg_class WHERE oid = 'posts'::regclass")
        == "d"
    )


async def test_rolled_back_transaction_sends_nothing(started, db) -> None:
    _, collector = started
    await db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    await publish(db, "t")
    tx = db.transaction()
    await tx.start()
    await db.execute("INSERT INTO t VALUES (1, 'never')")
    await db.execute("INSERT INTO t VALUES (2, 'never')")
    await tx.rollback()
    await db.execute("INSERT INTO t VALUES (3, 'kept')")
    changes = await collector.wait_for(1)
    await collector.quiet(0.3)
    assert [c.new for c in changes] == [{"id": 3, "v": "kept"}]


async def test_large_row_arrives_whole(started, db) -> None:
    _, collector = started
    await db.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, note text)")
    await publish(db, "docs")
    body = os.urandom(50_000).hex()  # 100 KB, incompressible: stored out of line (TOAST)
    await db.execute("INSERT INTO docs VALUES (1, $1, 'a')", body)
    (change,) = await collector.wait_for(1)
    assert change.new["body"] == body and len(change.new["body"]) == 100_000


async def test_unchanged_toast_filled_by_key(started, db) -> None:
    feed, collector = started
    await db.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, note text)")
    await publish(db, "docs")
    body = os.urandom(50_000).hex()
    await db.execute("INSERT INTO docs VALUES (1, $1, 'a'), (2, $1, 'b')", body)
    await db.execute("UPDATE docs SET note = 'changed'")  # body untouched: sent as 'u'
    changes = await collector.wait_for(4)
    updates = [c for c in changes if c.event == "UPDATE"]
    assert [u.new["note"] for u in updates] == ["changed", "changed"]
    assert all(u.new["body"] == body for u in updates)
    assert feed.status()["toast_lookups"] == 1  # both rows in one query


async def test_unchanged_toast_under_full_identity_comes_from_old_row(started, db) -> None:
    """With FULL the value is the one of that moment, even if a later change in the same
    transaction overwrote it (a lookup by key could only see the newest)."""
    feed, collector = started
    await db.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, note text)")
    await publish(db, "docs")
    await set_replica_identity_full(db, "public", "docs")
    first, second = os.urandom(50_000).hex(), os.urandom(50_000).hex()
    await db.execute("INSERT INTO docs VALUES (1, $1, 'a')", first)
    async with db.transaction():
        await db.execute("UPDATE docs SET note = 'b'")
        await db.execute("UPDATE docs SET body = $1", second)
    _, keep, replace = await collector.wait_for(3)
    assert keep.new == {"id": 1, "body": first, "note": "b"}
    assert keep.old["body"] == first
    assert replace.new["body"] == second
    assert feed.status()["toast_lookups"] == 0


async def test_types_round_trip(started, db) -> None:
    _, collector = started
    await db.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
    await db.execute("CREATE DOMAIN positive AS int CHECK (VALUE > 0)")
    await db.execute(
        """CREATE TABLE everything (
          id int PRIMARY KEY, big bigint, small smallint, amount numeric(10,2), ok bool,
          label text, name varchar(20), doc jsonb, plain json, at timestamptz,
          local_at timestamp, day date, clock time, uid uuid, ints int[], texts text[],
          grid int[][], ratio float8, weird float8, raw bytea, moods mood[], pos positive,
          nothing text, points point)"""
    )
    await publish(db, "everything")
    await db.execute(
        """INSERT INTO everything VALUES (
          1, 9007199254740993, -7, 1234.50, true, 'héllo "q"', 'v', '{"a": {"b": [1, null]}}',
          '[1, "x"]', '2024-01-15 11:30:00.123456+01', '2024-01-15 10:30:00', '2024-01-15',
          '10:30:00', '248373e1-0aea-45ce-8844-5ef259203749', '{1,NULL,3}',
          ARRAY['a b', 'c"d', NULL, 'NULL', ''], '{{1,2},{3,4}}', 0.1, 'NaN', '\\x00ff',
          '{happy,sad}', 5, NULL, '(1,2)')"""
    )
    (change,) = await collector.wait_for(1)
    assert change.new == {
        "id": 1,
        "big": 9007199254740993,
        "small": -7,
        "amount": "1234.50",
        "ok": True,
        "label": 'héllo "q"',
        "name": "v",
        "doc": {"a": {"b": [1, None]}},
        "plain": [1, "x"],
        "at": "2024-01-15T10:30:00.123456Z",
        "local_at": "2024-01-15T10:30:00",
        "day": "2024-01-15",
        "clock": "10:30:00",
        "uid": "248373e1-0aea-45ce-8844-5ef259203749",
        "ints": [1, None, 3],
        "texts": ["a b", 'c"d', None, "NULL", ""],
        "grid": [[1, 2], [3, 4]],
        "ratio": 0.1,
        "weird": "NaN",
        "raw": "\\x00ff",
        "moods": ["happy", "sad"],
        "pos": 5,
        "nothing": None,
        "points": "(1,2)",
    }


async def test_session_time_zone_does_not_matter(started, db) -> None:
    """A database whose default TimeZone is not UTC still yields UTC '...Z' strings."""
    _, collector = started
    dbname = await db.fetchval("SELECT current_database()")
    await db.execute(f"ALTER DATABASE {dbname} SET timezone TO 'Asia/Kolkata'")
    await db.execute("CREATE TABLE t (id int PRIMARY KEY, at timestamptz)")
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1, '2024-01-15 10:30:00+00')")
    (change,) = await collector.wait_for(1)
    assert change.new["at"] == "2024-01-15T10:30:00Z"


async def test_schema_changes_mid_stream(started, db) -> None:
    _, collector = started
    await db.execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1, 'x')")
    await collector.wait_for(1)
    await db.execute("ALTER TABLE t ADD COLUMN b jsonb")
    await db.execute("""INSERT INTO t VALUES (2, 'y', '{"k": 1}')""")
    await db.execute("ALTER TABLE t DROP COLUMN a")
    await db.execute("CREATE TYPE color AS ENUM ('red')")
    await db.execute("ALTER TABLE t ADD COLUMN c color[]")
    await db.execute("INSERT INTO t VALUES (3, NULL, '{red}')")
    await db.execute("UPDATE t SET b = '[]' WHERE id = 1")
    changes = await collector.wait_for(4)
    assert [c.new for c in changes] == [
        {"id": 1, "a": "x"},
        {"id": 2, "a": "y", "b": {"k": 1}},
        {"id": 3, "b": None, "c": ["red"]},
        {"id": 1, "b": [], "c": None},
    ]


async def test_changes_while_stopped_arrive_after_restart(feed_factory: FeedFactory, db) -> None:
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    first = Collector()
    feed = feed_factory(on_batch=first)
    await feed.start()
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1)")
    await first.wait_for(1)
    await feed.stop()
    await db.execute("INSERT INTO t VALUES (2)")
    await db.execute("INSERT INTO t VALUES (3)")

    second = Collector()
    feed = feed_factory(on_batch=second)
    await feed.start()
    await db.execute("INSERT INTO t VALUES (4)")
    changes = await second.wait_for(3)
    await second.quiet(0.3)
    assert [c.new["id"] for c in changes] == [2, 3, 4]  # 1 was acknowledged: not again


async def test_position_confirmed_only_after_acknowledgement(feed_factory: FeedFactory, db) -> None:
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    handed: list[RowChange] = []
    arrived = asyncio.Event()

    async def never_finishes(changes: list[RowChange]) -> None:
        handed.extend(changes)
        arrived.set()
        await asyncio.Event().wait()

    feed = feed_factory(on_batch=never_finishes)
    await feed.start()
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1)")
    await asyncio.wait_for(arrived.wait(), 10)
    slot = feed.config.slot
    await asyncio.sleep(0.5)
    assert await confirmed_lsn(db, slot) < handed[0].lsn
    await feed.stop()  # the handler never returned: not acknowledged
    assert await confirmed_lsn(db, slot) < handed[0].lsn

    collector = Collector()
    feed = feed_factory(on_batch=collector)
    await feed.start()
    (again,) = await collector.wait_for(1)
    assert again.new == {"id": 1} and again.lsn == handed[0].lsn
    async with asyncio.timeout(10):
        while await confirmed_lsn(db, slot) < again.lsn:
            await asyncio.sleep(0.05)
    assert feed.status()["confirmed_lsn"] != "0/0"


async def test_failed_delivery_is_read_again(feed_factory: FeedFactory, db) -> None:
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    seen: list[int] = []

    async def fails_once(changes: list[RowChange]) -> None:
        first_time = not seen
        seen.extend(c.new["id"] for c in changes)
        if first_time:
            raise RuntimeError("subscriber routing broke")

    feed = feed_factory(on_batch=fails_once)
    await feed.start()
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1)")
    async with asyncio.timeout(10):
        while len(seen) < 2:
            await asyncio.sleep(0.05)
    await db.execute("INSERT INTO t VALUES (2)")
    async with asyncio.timeout(10):
        while 2 not in seen:
            await asyncio.sleep(0.05)
    assert seen == [1, 1, 2]


async def test_realtime_schema_is_skipped_and_position_advances(started, db) -> None:
    feed, collector = started
    await db.execute("INSERT INTO realtime.channels (pattern) VALUES ('order:*')")
    await db.execute("SELECT realtime.publish('order:1', 'created', '{}')")
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1)")
    changes = await collector.wait_for(1)
    await collector.quiet(0.3)
    assert [(c.schema, c.table) for c in changes] == [("public", "t")]
    # WAL of skipped transactions is confirmed too, so the slot does not hold it back
    await db.execute("SELECT realtime.publish('order:1', 'created', '{}')")
    end = lsn_from_str(await db.fetchval("SELECT pg_current_wal_lsn()::text"))
    async with asyncio.timeout(15):
        while await confirmed_lsn(db, feed.config.slot) < end:
            await asyncio.sleep(0.1)


async def test_truncate_is_a_change_without_rows(started, db) -> None:
    _, collector = started
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await db.execute("CREATE TABLE u (id int PRIMARY KEY)")
    await db.execute("CREATE TABLE unpublished (id int PRIMARY KEY)")
    await publish(db, "t", "u")
    await db.execute("INSERT INTO t VALUES (1)")
    await db.execute("TRUNCATE t")
    await db.execute("INSERT INTO t VALUES (2)")
    await db.execute("TRUNCATE t, u, unpublished")  # one message naming the tables
    changes = await collector.wait_for(5)
    await collector.quiet(0.3)
    assert [(c.event, c.table) for c in changes] == [
        ("INSERT", "t"),
        ("TRUNCATE", "t"),
        ("INSERT", "t"),
        ("TRUNCATE", "t"),
        ("TRUNCATE", "u"),
    ]
    truncate = changes[1]
    assert (truncate.new, truncate.old, truncate.key) == (None, None, {})
    assert changes[0].lsn < truncate.lsn < changes[2].lsn
    assert changes[3].xid == changes[4].xid and changes[3].lsn == changes[4].lsn
    payload = build_payload(truncate)
    assert payload == {
        "schema": "public",
        "table": "t",
        "commit_timestamp": truncate.commit_timestamp,
        "eventType": "TRUNCATE",
        "new": None,
        "old": None,
    }
    assert RFC3339_UTC.match(payload["commit_timestamp"])


async def test_truncate_of_a_partitioned_table(started, db) -> None:
    _, collector = started
    await db.execute(
        """
        CREATE TABLE m (id int PRIMARY KEY) PARTITION BY RANGE (id);
        CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (10);
        """
    )
    await publish(db, "m")
    await db.execute("TRUNCATE m1")  # one partition: PostgreSQL reports only the root's
    await db.execute("INSERT INTO m VALUES (1)")
    await db.execute("TRUNCATE m")
    changes = await collector.wait_for(2)
    await collector.quiet(0.3)
    assert [(c.event, c.table) for c in changes] == [("INSERT", "m"), ("TRUNCATE", "m")]


async def test_status_and_idempotent_setup(feed_factory: FeedFactory, db) -> None:
    await db.execute("CREATE TABLE nokey (a int)")
    feed = feed_factory(on_batch=Collector())
    assert feed.status()["enabled"] is False
    await feed.start()
    await feed.start()  # already running: no-op
    status = feed.status()
    assert status["enabled"] is True and status["slot"] == feed.config.slot
    assert status["publication"] == "pgrealtime"
    assert status["publication_all_tables"] is False
    assert status["tables_without_replica_identity"] == []  # nokey is not published
    pub = await db.fetchrow(
        "SELECT puballtables, pubviaroot, pubinsert, pubupdate, pubdelete "
        "FROM pg_publication WHERE pubname = 'pgrealtime'"
    )
    assert tuple(pub) == (False, True, True, True, True)  # created empty
    assert await db.fetchval("SELECT count(*) FROM pg_publication_tables") == 0
    async with asyncio.timeout(10):
        while feed.status()["lag_bytes"] is None:
            await asyncio.sleep(0.05)
    assert feed.status()["lag_bytes"] >= 0
    assert feed.status()["state"] == "streaming"
    await feed.stop()
    # a second start finds the publication and slot in place
    again = feed_factory(on_batch=Collector())
    await again.start()
    assert again.status()["enabled"]
    pubs = await db.fetchval("SELECT count(*) FROM pg_publication WHERE pubname = 'pgrealtime'")
    assert pubs == 1
    assert await again.drop_slot() is True
    assert (
        await db.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", again.config.slot
        )
        == 0
    )


async def test_table_without_key_stays_writable(started, db) -> None:
    """The regression test: a table without a primary key that nobody subscribed to
    can be UPDATEd and DELETEd by the application while the feed runs, even after a
    subscribe to it was refused. (A FOR ALL TABLES publication made PostgreSQL refuse
    both: 'does not have a replica identity and publishes updates'.)"""
    _, collector = started
    await db.execute("CREATE TABLE log (at text, n int)")
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await publish(db, "t")
    await db.execute("INSERT INTO log VALUES ('a', 1), ('b', 2)")
    await db.execute("UPDATE log SET n = n + 1")
    await db.execute("DELETE FROM log WHERE at = 'a'")
    with pytest.raises(TableNotPublishable):
        await publish(db, "log")
    await db.execute("UPDATE log SET n = 10")
    await db.execute("DELETE FROM log")
    await db.execute("INSERT INTO t VALUES (1)")
    changes = await collector.wait_for(1)
    await collector.quiet(0.3)
    assert [(c.table, c.event) for c in changes] == [("t", "INSERT")]  # log never published


async def test_existing_all_tables_publication_is_left_with_a_warning(
    feed_factory: FeedFactory, db, caplog: pytest.LogCaptureFixture
) -> None:
    """A publication FOR ALL TABLES (from an earlier version) is not dropped: someone
    may read it. The feed warns, says how to switch, and lists the blocked tables."""
    await db.execute("CREATE TABLE nokey (a int)")
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await db.execute(
        "CREATE PUBLICATION pgrealtime FOR ALL TABLES WITH (publish_via_partition_root = true)"
    )
    collector = Collector()
    feed = feed_factory(on_batch=collector)
    with caplog.at_level("WARNING", logger="pgrealtime.changes.feed"):
        await feed.start()
    status = feed.status()
    assert status["publication_all_tables"] is True
    assert "public.nokey" in status["tables_without_replica_identity"]
    assert "FOR ALL TABLES" in caplog.text and "DROP PUBLICATION" in caplog.text
    assert "public.nokey" in caplog.text
    assert await db.fetchval("SELECT puballtables FROM pg_publication") is True
    await publish(db, "t")  # already published: nothing to add
    await db.execute("INSERT INTO t VALUES (1)")
    (change,) = await collector.wait_for(1)
    assert change.table == "t"


async def test_start_requires_handler(db_url: str) -> None:
    with pytest.raises(RuntimeError, match="on_batch"):
        await ChangeFeed(db_url, FeedSettings(slot="unused")).start()


async def test_disabled_when_wal_level_is_not_logical() -> None:
    """A second, private cluster started with wal_level=replica: the feed reports why
    it is off instead of crashing."""
    root = Path(tempfile.mkdtemp(prefix="pgrt-replica-"))  # not under a private folder
    os.chmod(root, 0o755)  # noqa: S103 - the server's own user must reach it
    cluster = EmbeddedPostgres(root, port=40000 + os.getpid() % 20000)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, cluster.start)  # initdb, then started with logical
    try:
        await loop.run_in_executor(None, cluster.stop)
        options = (
            f"-c listen_addresses='' -c port={cluster.port} "
            f"-c unix_socket_directories='{cluster.socket_dir}' -c wal_level=replica"
        )
        await loop.run_in_executor(
            None,
            lambda: cluster._pg(
                "pg_ctl",
                "-D",
                str(cluster.pgdata),
                "-w",
                "-l",
                str(cluster.pgdata / "server.log"),
                "-o",
                options,
                "start",
            ),
        )
        feed = ChangeFeed(cluster.url, on_batch=Collector())
        await feed.start()
        status = feed.status()
        assert status["enabled"] is False
        assert status["reason"] == WAL_LEVEL_REASON
        assert status["state"] == "disabled"
        await feed.stop()
    finally:
        await loop.run_in_executor(None, lambda: cluster.stop(mode="immediate"))
        shutil.rmtree(root, ignore_errors=True)


def test_wal_level_decision() -> None:
    assert wal_level_problem("logical") is None
    assert wal_level_problem("replica") == WAL_LEVEL_REASON
    assert wal_level_problem("minimal") == WAL_LEVEL_REASON
    assert WAL_LEVEL_REASON == (
        "change notifications need wal_level=logical: "
        "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    )
    assert role_problem("app", False, True) is None
    assert role_problem("app", True, False) is None
    assert 'ALTER ROLE "app" REPLICATION' in role_problem("app", False, False)


async def test_reconnects_when_the_replication_connection_drops(started, db) -> None:
    feed, collector = started
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await publish(db, "t")
    await db.execute("INSERT INTO t VALUES (1)")
    await collector.wait_for(1)
    killed = await db.fetchval(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = $1 AND active_pid IS NOT NULL",
        feed.config.slot,
    )
    assert killed
    await db.execute("INSERT INTO t VALUES (2)")
    changes = await collector.wait_for(2)
    await collector.quiet(0.3)
    assert [c.new["id"] for c in changes] == [1, 2]
    assert feed.status()["state"] == "streaming"
