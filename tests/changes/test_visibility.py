"""Who may subscribe to a table, and who sees which row (RLS), against PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from pgrealtime.changes.filters import ChangeFilter, FilterError, parse_filter
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.visibility import (
    SubscriptionDenied,
    TableNotFound,
    TableNotPublishable,
    authorize_subscription,
    authorize_table,
    batch_readers,
    publish_table,
    route_batch,
    table_of_channel,
    table_readers,
    visible_rows,
)

from .conftest import publish

ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())

NOTES = """
CREATE TABLE notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner uuid, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON notes FOR SELECT TO authenticated USING (owner = auth.uid());
GRANT SELECT ON notes TO authenticated;
CREATE TABLE news (id int PRIMARY KEY, title text);
GRANT SELECT ON news TO anon, authenticated;
"""


def claims(user: str | None) -> str:
    return json.dumps({"sub": user, "role": "authenticated"}) if user else "{}"


@dataclass(eq=False)
class Sub:
    """Stands in for the server's subscription object."""

    name: str
    role: str
    claims: str
    filter: ChangeFilter = field(default_factory=lambda: parse_filter(None))


class CountingDb:
    """Wraps a connection and counts round trips, to prove one query per batch."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.queries = 0

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.queries += 1
        return await self.conn.fetch(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.queries += 1
        return await self.conn.fetchval(query, *args)


@pytest.fixture
async def notes_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(NOTES)
    return db


async def test_authorize_table(notes_db) -> None:
    db = notes_db
    assert await authorize_table(db, "authenticated", claims(ALICE), "public", "notes") == "ok"
    assert await authorize_table(db, "anon", "{}", "public", "notes") == "denied"
    assert await authorize_table(db, "anon", "{}", "public", "news") == "ok"
    # a missing table is told apart only to a caller who may read every table there
    assert await authorize_table(db, "authenticated", "{}", "public", "nope") == "no_table"
    assert await authorize_table(db, "anon", "{}", "public", "nope") == "denied"
    assert await authorize_table(db, "authenticated", "{}", "nowhere", "nope") == "denied"
    assert await authorize_table(db, "postgres", "{}", "public", "news") == "denied"
    assert await db.fetchval("SELECT current_user") == "postgres"  # role was reset


async def test_authorize_subscription(notes_db) -> None:
    db = notes_db
    sub = await authorize_subscription(
        db, "authenticated", claims(ALICE), "db:notes", {"event": "INSERT"}
    )
    assert (sub.schema, sub.table, sub.filter.event) == ("public", "notes", "INSERT")
    with pytest.raises(SubscriptionDenied, match="Channel not found or not accessible") as e:
        await authorize_subscription(db, "anon", "{}", "db:notes", None)
    assert type(e.value) is SubscriptionDenied and e.value.code == "REALTIME_UNAUTHORIZED"
    with pytest.raises(SubscriptionDenied, match="Channel not found or not accessible") as e:
        await authorize_subscription(db, "anon", "{}", "db:missing", None)
    assert e.value.code == "REALTIME_UNAUTHORIZED"  # anon may not read notes: not told
    with pytest.raises(TableNotFound, match=r"public\.missing does not exist") as e:
        await authorize_subscription(db, "authenticated", claims(ALICE), "db:missing", None)
    assert e.value.code == "TABLE_NOT_FOUND" and isinstance(e.value, SubscriptionDenied)
    with pytest.raises(SubscriptionDenied):
        await authorize_subscription(db, "anon", "{}", "order:1", None)
    with pytest.raises(FilterError, match=r"filter\.event") as f:
        await authorize_subscription(db, "anon", "{}", "db:news", {"event": "MERGE"})
    assert f.value.code == "INVALID_FILTER"
    with pytest.raises(FilterError, match="not published"):
        await authorize_subscription(
            db, "project_admin", "{}", "db:messages", {"schema": "realtime"}
        )
    assert table_of_channel("db:posts") == "posts"
    assert table_of_channel("db:") is None and table_of_channel("posts") is None


async def published(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables "
        "WHERE pubname = 'pgrealtime' ORDER BY 1"
    )
    return [r["t"] for r in rows]


async def test_subscribe_adds_the_table_to_the_publication(started, notes_db) -> None:
    _, collector = started
    db = notes_db
    assert await published(db) == []
    await db.execute("INSERT INTO news VALUES (1, 'before')")  # not published yet
    await authorize_subscription(db, "anon", "{}", "db:news", None)
    assert await published(db) == ["public.news"]
    with pytest.raises(SubscriptionDenied):  # refused callers publish nothing
        await authorize_subscription(db, "anon", "{}", "db:notes", None)
    assert await published(db) == ["public.news"]
    await authorize_subscription(db, "anon", "{}", "db:news", {"event": "INSERT"})  # again
    assert await publish_table(db, "pgrealtime", "public", "news") == "published"
    await db.execute("INSERT INTO news VALUES (2, 'after')")
    (change,) = await collector.wait_for(1)
    assert change.new == {"id": 2, "title": "after"}
    assert await db.fetchval("SELECT current_user") == "postgres"


async def test_concurrent_first_subscribes(started, db_url: str, notes_db) -> None:
    conns = [await asyncpg.connect(db_url) for _ in range(4)]
    try:
        statuses = await asyncio.gather(
            *(publish_table(c, "pgrealtime", "public", "news") for c in conns)
        )
    finally:
        for c in conns:
            await c.close()
    assert sorted(set(statuses)) <= ["added", "published"] and "added" in statuses
    assert await published(notes_db) == ["public.news"]


async def test_table_without_identity_is_refused(started, notes_db) -> None:
    db = notes_db
    await db.execute("CREATE TABLE log (at text, n int); GRANT SELECT ON log TO anon")
    with pytest.raises(TableNotPublishable) as e:
        await authorize_subscription(db, "anon", "{}", "db:log", None)
    assert e.value.code == "TABLE_NOT_PUBLISHABLE" and isinstance(e.value, SubscriptionDenied)
    message = str(e.value)
    assert "public.log" in message and "primary key" in message
    assert "pgrealtime replica-identity public.log --full" in message
    assert await published(db) == []
    await db.execute("UPDATE log SET n = 1")  # the application's writes still work
    await db.execute("ALTER TABLE log REPLICA IDENTITY NOTHING")
    with pytest.raises(TableNotPublishable):
        await authorize_subscription(db, "anon", "{}", "db:log", None)
    # an identity index (unique, not null columns) is enough; dropping it is not
    await db.execute(
        "ALTER TABLE log ALTER at SET NOT NULL; CREATE UNIQUE INDEX log_at ON log (at)"
    )
    await db.execute("ALTER TABLE log REPLICA IDENTITY USING INDEX log_at")
    assert await db.fetchval("SELECT realtime.has_replica_identity('log'::regclass)")
    await db.execute("DROP INDEX log_at")
    assert not await db.fetchval("SELECT realtime.has_replica_identity('log'::regclass)")
    # a partitioned table: every partition needs an identity
    await db.execute(
        "CREATE TABLE events (at date, n int) PARTITION BY RANGE (at);"
        "CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') "
        "  TO ('2025-01-01');"
        "GRANT SELECT ON events TO anon"
    )
    with pytest.raises(TableNotPublishable):
        await authorize_subscription(db, "anon", "{}", "db:events", None)
    await db.execute("ALTER TABLE events_2024 REPLICA IDENTITY FULL")
    await authorize_subscription(db, "anon", "{}", "db:events", None)
    assert await published(db) == ["public.events"]


async def test_full_identity_table_without_key_is_accepted(started, notes_db) -> None:
    _, collector = started
    db = notes_db
    await db.execute("CREATE TABLE log (at text, n int); GRANT SELECT ON log TO anon")
    await db.execute("ALTER TABLE log REPLICA IDENTITY FULL")
    sub = await authorize_subscription(db, "anon", "{}", "db:log", None)
    assert (sub.schema, sub.table) == ("public", "log")
    assert await published(db) == ["public.log"]
    await db.execute("INSERT INTO log VALUES ('a', 1)")
    await db.execute("UPDATE log SET n = 2")
    await db.execute("DELETE FROM log")
    _, update, delete = await collector.wait_for(3)
    assert (update.old, update.new) == ({"at": "a", "n": 1}, {"at": "a", "n": 2})
    assert delete.old == {"at": "a", "n": 2}


async def test_publication_changes_only_as_the_server(started, notes_db) -> None:
    """A caller's role cannot add tables: publish_table is not executable by them, and
    a server user that may not publish a table gets a clear refusal."""
    db = notes_db
    async with db.transaction():
        await db.execute("SET LOCAL ROLE anon")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.fetchval("SELECT realtime.publish_table('pgrealtime', 'public', 'news')")
    tx = db.transaction()  # rolled back: roles are cluster-wide
    await tx.start()
    try:
        await db.execute(
            "CREATE ROLE pgrt_not_owner; GRANT USAGE ON SCHEMA realtime TO pgrt_not_owner;"
            "GRANT EXECUTE ON FUNCTION realtime.publish_table(text, text, text) "
            "  TO pgrt_not_owner;"
            "ALTER PUBLICATION pgrealtime OWNER TO pgrt_not_owner;"
            "SET LOCAL ROLE pgrt_not_owner"
        )
        with pytest.raises(TableNotPublishable, match="ALTER PUBLICATION") as e:
            await publish_table(db, "pgrealtime", "public", "news")
        assert e.value.code == "TABLE_NOT_PUBLISHABLE"
    finally:
        await tx.rollback()
    await publish(db, "news")  # as the server (here the superuser) it works


async def test_no_publication_when_the_feed_is_off(notes_db) -> None:
    db = notes_db
    sub = await authorize_subscription(db, "anon", "{}", "db:news", None)
    assert sub.table == "news"
    assert await db.fetchval("SELECT count(*) FROM pg_publication") == 0
    assert await publish_table(db, "pgrealtime", "public", "news") == "no_publication"
    await db.execute("CREATE TABLE log (a int); GRANT SELECT ON log TO anon")
    with pytest.raises(TableNotPublishable):  # refused the same way whether the feed runs
        await authorize_subscription(db, "anon", "{}", "db:log", None)
    assert await authorize_subscription(db, "anon", "{}", "db:log", None, publication=None)


async def test_visible_rows_one_query_for_many_viewers(notes_db) -> None:
    db = notes_db
    ids = [
        str(await db.fetchval("INSERT INTO notes (owner) VALUES ($1) RETURNING id", owner))
        for owner in (ALICE, BOB, ALICE)
    ]
    counting = CountingDb(db)
    viewers = [
        ("authenticated", claims(ALICE)),
        ("authenticated", claims(BOB)),
        ("authenticated", claims(None)),
        ("anon", "{}"),
        ("project_admin", "{}"),  # no grant on notes: sees nothing
        ("superuser", "{}"),  # not on the allow-list: sees nothing
    ]
    keys = [{"id": i} for i in [*ids, str(uuid.uuid4())]]
    visible = await visible_rows(counting, "public", "notes", ["id"], keys, viewers)
    assert counting.queries == 1
    assert visible == [{0, 2}, {1}, set(), set(), set(), set()]
    assert await db.fetchval("SELECT current_user") == "postgres"


async def test_visible_rows_with_a_jsonb_codec(notes_db) -> None:
    """The server's pool decodes/encodes json itself: keys must still arrive as an array."""
    db = notes_db
    note = str(await db.fetchval("INSERT INTO notes (owner) VALUES ($1) RETURNING id", ALICE))
    await db.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
    viewers = [("authenticated", claims(ALICE))]
    assert await visible_rows(db, "public", "notes", ["id"], [{"id": note}], viewers) == [{0}]


async def test_route_batch_with_rls(started, notes_db) -> None:
    _, collector = started
    db = notes_db
    await publish(db, "notes", "news")
    alice_id = await db.fetchval(
        "INSERT INTO notes (owner, body) VALUES ($1, 'a') RETURNING id", ALICE
    )
    await db.execute("INSERT INTO notes (owner, body) VALUES ($1, 'b')", BOB)
    await db.execute("UPDATE notes SET body = 'a2' WHERE id = $1", alice_id)
    await db.execute("INSERT INTO news VALUES (1, 'public news')")
    changes = await collector.wait_for(4)
    assert all(c.rls for c in changes if c.table == "notes")
    assert not next(c for c in changes if c.table == "news").rls

    alice = Sub("alice", "authenticated", claims(ALICE))
    alice_inserts = Sub(
        "alice-ins", "authenticated", claims(ALICE), parse_filter({"event": "INSERT"})
    )
    bob = Sub("bob", "authenticated", claims(BOB))
    reader = Sub("anon-news", "anon", "{}")
    subs = {"notes": [alice, alice_inserts, bob], "news": [reader]}

    counting = CountingDb(db)
    deliveries = await route_batch(counting, changes, lambda schema, table: subs[table])
    assert counting.queries == 1  # one visibility query for the notes table, none for news
    got = [
        (d.change.event, d.payload["new"]["body" if d.change.table == "notes" else "title"],
         sorted(s.name for s in d.subscribers))
        for d in deliveries
    ]  # fmt: skip
    assert got == [
        ("INSERT", "a", ["alice", "alice-ins"]),
        ("INSERT", "b", ["bob"]),
        ("UPDATE", "a2", ["alice"]),
        ("INSERT", "public news", ["anon-news"]),
    ]
    assert deliveries[0].channel == "db:notes"


async def test_delete_on_rls_table_reveals_only_the_key(started, notes_db) -> None:
    _, collector = started
    db = notes_db
    await db.execute("ALTER TABLE notes REPLICA IDENTITY FULL")
    await publish(db, "notes")
    note_id = str(
        await db.fetchval("INSERT INTO notes (owner, body) VALUES ($1, 's') RETURNING id", ALICE)
    )
    await db.execute("DELETE FROM notes")
    changes = await collector.wait_for(2)
    delete = changes[1]
    assert delete.event == "DELETE" and delete.old["body"] == "s"  # FULL: whole old row read
    subs = [Sub("alice", "authenticated", claims(ALICE)), Sub("bob", "authenticated", claims(BOB))]
    counting = CountingDb(db)
    deliveries = await route_batch(counting, [delete], lambda s, t: subs)
    assert counting.queries == 0
    (delivery,) = deliveries
    assert [s.name for s in delivery.subscribers] == ["alice", "bob"]
    assert delivery.payload["old"] == {"id": note_id}  # but only the key is sent


async def test_truncate_on_rls_table_goes_to_every_subscriber(started, notes_db) -> None:
    _, collector = started
    db = notes_db
    await publish(db, "notes")
    await db.execute("INSERT INTO notes (owner, body) VALUES ($1, 'a')", ALICE)
    await db.execute("TRUNCATE notes")
    insert, truncate = await collector.wait_for(2)
    assert truncate.event == "TRUNCATE" and truncate.rls
    alice = Sub("alice", "authenticated", claims(ALICE))
    bob = Sub("bob", "authenticated", claims(BOB))  # may see none of the rows
    only_truncates = Sub("t", "authenticated", claims(BOB), parse_filter({"event": "TRUNCATE"}))
    only_deletes = Sub("d", "authenticated", claims(BOB), parse_filter({"event": "DELETE"}))
    row_filter = Sub("f", "authenticated", claims(BOB),
                     parse_filter({"column": "body", "op": "neq", "value": "zzz"}))  # fmt: skip
    subs = [alice, bob, only_truncates, only_deletes, row_filter]
    counting = CountingDb(db)
    (delivery,) = await route_batch(counting, [truncate], lambda s, t: subs)
    assert counting.queries == 0  # no row to check
    assert [s.name for s in delivery.subscribers] == ["alice", "bob", "t"]
    assert delivery.channel == "db:notes"
    assert delivery.payload["eventType"] == "TRUNCATE"
    assert (delivery.payload["new"], delivery.payload["old"]) == (None, None)
    # in one batch: the inserted row is gone by routing time, so its INSERT reaches
    # nobody (RLS looks rows up), while the TRUNCATE reaches both
    deliveries = await route_batch(db, [insert, truncate], lambda s, t: [alice, bob])
    assert [(d.change.event, [s.name for s in d.subscribers]) for d in deliveries] == [
        ("TRUNCATE", ["alice", "bob"]),
    ]


async def test_rls_table_without_key_is_not_delivered(notes_db) -> None:
    change = RowChange("public", "notes", "INSERT", "2024-01-15T10:30:00Z", 1, 1,
                       {"body": "x"}, None, key={}, rls=True)  # fmt: skip
    subs = [Sub("alice", "authenticated", claims(ALICE))]
    assert await route_batch(notes_db, [change], lambda s, t: subs) == []


async def test_filters_apply_before_visibility(notes_db) -> None:
    change = RowChange("public", "news", "INSERT", "2024-01-15T10:30:00Z", 1, 1,
                       {"id": 1, "title": "x"}, None, key={"id": "1"})  # fmt: skip
    wants_updates = Sub("u", "anon", "{}", parse_filter({"event": "UPDATE"}))
    wants_id_1 = Sub("one", "anon", "{}", parse_filter({"column": "id", "value": 1}))
    other_schema = Sub("s", "anon", "{}", parse_filter({"schema": "shop"}))
    deliveries = await route_batch(
        notes_db, [change], lambda s, t: [wants_updates, wants_id_1, other_schema]
    )
    assert [[s.name for s in d.subscribers] for d in deliveries] == [["one"]]


# -- realtime.visible_rows at scale (migration 007) ------------------------------------

OWNED = """
CREATE TABLE owned (id bigserial PRIMARY KEY, owner uuid NOT NULL, body text);
ALTER TABLE owned ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON owned FOR SELECT TO authenticated USING (owner = auth.uid());
GRANT SELECT ON owned TO authenticated;
"""


async def _owned_rows(db: asyncpg.Connection, owners: list[str], per_owner: int) -> list[Any]:
    """Rows spread over `owners` (interleaved, so each user's rows are scattered)."""
    return await db.fetch(
        "INSERT INTO owned (owner) SELECT o FROM generate_series(1, $2) g, unnest($1::uuid[]) o "
        "ORDER BY g, o RETURNING id, owner::text",
        owners,
        per_owner,
    )


@pytest.mark.parametrize("index", [False, True], ids=["no-owner-index", "owner-index"])
async def test_many_viewers_each_get_exactly_their_rows(notes_db, index: bool) -> None:
    """60 users and 240 rows in one call: each user gets exactly the batch's rows it
    owns, whether the batch's keys are dense (range lookup) or scattered (= ANY), with
    and without an index serving the policy; duplicates and missing keys included."""
    db = notes_db
    await db.execute(OWNED)
    if index:
        await db.execute("CREATE INDEX ON owned (owner); ANALYZE owned")
    users = [str(uuid.uuid4()) for _ in range(60)]
    rows = await _owned_rows(db, users, 4)
    owner_of = {str(r["id"]): r["owner"] for r in rows}
    viewers = [("authenticated", claims(u)) for u in users] + [("anon", "{}")]
    dense = [str(r["id"]) for r in rows]
    scattered = [*dense[::7], dense[3], "999999999"]  # a duplicate, a row that is gone
    for ids in (dense, scattered):
        keys = [{"id": i} for i in ids]
        visible = await visible_rows(db, "public", "owned", ["id"], keys, viewers)
        for user, seen in zip(users, visible, strict=False):
            assert seen == {n for n, i in enumerate(ids) if owner_of.get(i) == user}
        assert visible[-1] == set()  # anon: no grant
    assert await db.fetchval("SELECT current_user") == "postgres"


async def test_composite_and_typed_keys(notes_db) -> None:
    """Keys of several columns and of types compared by their own equality."""
    db = notes_db
    await db.execute(
        """
        CREATE TABLE docs (tenant text, at timestamptz, owner uuid,
                           PRIMARY KEY (tenant, at));
        ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_docs ON docs FOR SELECT TO authenticated USING (owner = auth.uid());
        GRANT SELECT ON docs TO authenticated;
        """
    )
    await db.execute(
        "INSERT INTO docs VALUES ('a', '2024-01-15 10:30:00+00', $1), "
        "('a', '2024-01-15 10:31:00+00', $2), ('b', '2024-01-15 10:30:00+00', $2)",
        uuid.UUID(ALICE),
        uuid.UUID(BOB),
    )
    keys = [  # as pgoutput prints them (UTC, ISO)
        {"tenant": "a", "at": "2024-01-15 10:30:00+00"},
        {"tenant": "a", "at": "2024-01-15 11:31:00+01"},  # the same instant, other zone
        {"tenant": "b", "at": "2024-01-15 10:30:00+00"},
        {"tenant": "b", "at": "2024-01-15 10:31:00+00"},  # no such row
    ]
    viewers = [("authenticated", claims(ALICE)), ("authenticated", claims(BOB))]
    visible = await visible_rows(db, "public", "docs", ["tenant", "at"], keys, viewers)
    assert visible == [{0}, {1, 2}]


async def test_a_policy_that_raises_hides_rows_from_that_viewer_only(notes_db) -> None:
    """A policy failing for one viewer (bad claims), or on one of a viewer's rows after
    others passed, hides everything from that viewer, and from nobody else."""
    db = notes_db
    await db.execute(OWNED)
    await db.execute(
        """
        DROP POLICY own_rows ON owned;
        CREATE POLICY picky ON owned FOR SELECT TO authenticated USING (
          CASE WHEN owner = auth.uid()  -- CASE: PostgreSQL may reorder an AND
          THEN coalesce((auth.jwt() ->> 'level')::int, 0) >= 0
               AND (body IS DISTINCT FROM 'boom' OR (auth.jwt() ->> 'sub')::int > 0)
          ELSE false END);
        """
    )
    alice, bob, carol = (str(uuid.uuid4()) for _ in range(3))
    rows = await _owned_rows(db, [alice, bob, carol], 3)
    # one of carol's rows makes the policy fail for her (a uuid is no int)
    boom = max(r["id"] for r in rows if r["owner"] == carol)  # after her others
    await db.execute("UPDATE owned SET body = 'boom' WHERE id = $1", boom)
    viewers = [
        ("authenticated", claims(alice)),
        ("authenticated", json.dumps({"sub": bob, "level": "high"})),  # fails: not an int
        ("authenticated", claims(carol)),
        ("authenticated", claims(bob)),
    ]
    keys = [{"id": str(r["id"])} for r in rows]
    visible = await visible_rows(db, "public", "owned", ["id"], keys, viewers)
    mine = [{n for n, r in enumerate(rows) if r["owner"] == u} for u in (alice, bob)]
    assert visible == [mine[0], set(), set(), mine[1]]


async def test_a_viewer_without_select_sees_nothing(notes_db) -> None:
    db = notes_db
    await db.execute(OWNED)
    await db.execute(
        "CREATE POLICY anon_all ON owned FOR SELECT TO anon USING (true); "
        "CREATE POLICY admin_all ON owned FOR SELECT TO project_admin USING (true); "
        "GRANT SELECT ON owned TO project_admin"
    )
    rows = await _owned_rows(db, [ALICE], 3)
    keys = [{"id": str(r["id"])} for r in rows]
    viewers = [
        ("anon", "{}"),  # a policy lets it, but it has no SELECT on the table
        ("authenticated", claims(ALICE)),
        ("project_admin", "{}"),
        ("postgres", "{}"),  # not on the allow-list
    ]
    visible = await visible_rows(db, "public", "owned", ["id"], keys, viewers)
    assert visible == [set(), {0, 1, 2}, {0, 1, 2}, set()]


async def test_visible_rows_of_a_dropped_table_or_column(notes_db) -> None:
    """Rows that cannot be looked up any more go to nobody, without an error (an error
    would make the feed re-read the batch forever)."""
    db = notes_db
    viewers = [("authenticated", claims(ALICE))]
    keys = [{"id": "1"}]
    assert await visible_rows(db, "public", "gone", ["id"], keys, viewers) == [set()]
    assert await visible_rows(db, "public", "notes", ["nope"], keys, viewers) == [set()]
    assert await visible_rows(db, "public", "notes", ["id"], [{"id": "x"}], viewers) == [set()]


async def test_route_batch_many_users_one_query(notes_db) -> None:
    """Route 200 rows to 100 users (two subscriptions each, one with a row filter): one
    query, and each subscription gets exactly the rows it may see and its filter wants."""
    db = notes_db
    await db.execute(OWNED)
    users = [str(uuid.uuid4()) for _ in range(100)]
    rows = await _owned_rows(db, users, 2)
    await db.execute("UPDATE owned SET body = 'odd' WHERE id % 2 = 1")
    changes = [
        RowChange("public", "owned", "INSERT", "2024-01-15T10:30:00Z", 1, 1,
                  {"id": r["id"], "owner": r["owner"], "body": "odd" if r["id"] % 2 else None},
                  None, key={"id": str(r["id"])}, rls=True)
        for r in rows
    ]  # fmt: skip
    subs = []
    for user in users:
        subs.append(Sub(f"{user}/all", "authenticated", claims(user)))
        subs.append(Sub(f"{user}/odd", "authenticated", claims(user),
                        parse_filter({"column": "body", "value": "odd"})))  # fmt: skip
    counting = CountingDb(db)
    deliveries = await route_batch(counting, changes, lambda s, t: subs)
    assert counting.queries == 1
    got = {d.change.new["id"]: [s.name for s in d.subscribers] for d in deliveries}
    want = {
        r["id"]: [f"{r['owner']}/all"] + ([f"{r['owner']}/odd"] if r["id"] % 2 else [])
        for r in rows
    }
    assert got == want


async def test_each_role_gets_its_own_policies(notes_db) -> None:
    """The per-viewer statement is prepared once per call: a plan made under a
    permissive role must never serve a stricter one (anon is checked first here)."""
    db = notes_db
    await db.execute(OWNED)
    await db.execute(
        "CREATE POLICY anon_all ON owned FOR SELECT TO anon USING (true); "
        "GRANT SELECT ON owned TO anon"
    )
    rows = await _owned_rows(db, [ALICE], 3)
    keys = [{"id": str(r["id"])} for r in rows]
    viewers = [
        ("authenticated", claims(BOB)),
        ("anon", "{}"),
        ("authenticated", claims(ALICE)),
        ("anon", "{}"),
        ("authenticated", claims(None)),
    ]
    visible = await visible_rows(db, "public", "owned", ["id"], keys, viewers)
    everything = {0, 1, 2}
    assert visible == [set(), everything, everything, everything, set()]


async def test_table_readers_one_query_per_batch(notes_db) -> None:
    """Which roles may read each table now: one query, a REVOKE is seen at once, and a
    missing table or a role outside the allow-list reads as not allowed."""
    counting = CountingDb(notes_db)
    wanted = {
        ("public", "news"): {"anon", "authenticated", "postgres"},
        ("public", "notes"): {"anon", "authenticated"},
        ("public", "gone"): {"authenticated"},
        ("nowhere", "news"): {"anon"},
    }
    readers = await table_readers(counting, wanted)
    assert counting.queries == 1
    assert readers == {
        ("public", "news"): frozenset({"anon", "authenticated"}),
        ("public", "notes"): frozenset({"authenticated"}),
    }
    await notes_db.execute("REVOKE SELECT ON news FROM anon")
    readers = await table_readers(notes_db, wanted)
    assert readers[("public", "news")] == frozenset({"authenticated"})
    assert await table_readers(counting, {}) == {} and counting.queries == 1


async def test_batch_readers_ask_which_transactions_still_run_in_the_same_query(
    notes_db, db_url: str
) -> None:
    """route.py's two per-batch questions (who may read, is the batch visible yet) are
    one round trip; only transactions of tables someone may read are reported."""
    running = await asyncpg.connect(db_url)
    try:
        await running.execute("BEGIN")
        xid = await running.fetchval("SELECT pg_current_xact_id()::text::bigint") & 0xFFFFFFFF
        counting = CountingDb(notes_db)
        wanted = {("public", "news"): {"anon"}, ("public", "notes"): {"anon"}}
        checked = {("public", "news"): {xid}, ("public", "notes"): {xid}}  # notes: no reader
        readers, still = await batch_readers(counting, wanted, checked)
        assert counting.queries == 1
        assert readers == {("public", "news"): frozenset({"anon"})}
        assert still == [xid]
        await running.execute("COMMIT")
        assert await batch_readers(counting, wanted, checked) == (readers, [])
        assert counting.queries == 2
    finally:
        await running.close()
