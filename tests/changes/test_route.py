"""`db:<table>` channels end to end: a WebSocket subscriber receives committed changes."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def _owned_posts(server: Server) -> None:
    """public.posts, readable by its owner only (RLS), with the change feed streaming."""
    await server.db.execute(
        """
        CREATE TABLE public.posts (id uuid PRIMARY KEY, owner uuid, title text);
        GRANT SELECT ON public.posts TO authenticated;
        ALTER TABLE public.posts ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_posts ON public.posts FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await server.wait_streaming()


async def test_changes_reach_subscribers_with_rls_per_user(server: Server) -> None:
    await _owned_posts(server)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    a = await server.connect(server.token(sub=alice))
    b = await server.connect(server.token(sub=bob))
    for client in (a, b):
        reply = await client.request(
            {
                "type": "subscribe",
                "channel": "db:posts",
                "filter": {"event": "*", "schema": "public"},
            }
        )
        assert reply["type"] == "subscribed", reply
    post = uuid.uuid4()
    await server.db.execute("INSERT INTO posts VALUES ($1, $2, 'Hello')", post, uuid.UUID(alice))
    await server.db.execute("UPDATE posts SET title = 'Updated' WHERE id = $1", post)
    inserted = await a.expect("message", timeout=10)
    assert inserted["channel"] == "db:posts" and inserted["event"] == "INSERT"
    payload = inserted["payload"]
    assert payload["schema"] == "public" and payload["table"] == "posts"
    assert payload["eventType"] == "INSERT" and payload["old"] is None
    assert payload["new"] == {"id": str(post), "owner": alice, "title": "Hello"}
    assert payload["commit_timestamp"].endswith("Z")
    updated = await a.expect("message", timeout=10)
    assert updated["event"] == "UPDATE" and updated["payload"]["new"]["title"] == "Updated"
    # bob may not SELECT alice's row: his next frame is the pong, not her changes
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    assert [f for f in b.inbox if f["type"] == "message"] == []


async def test_db_channel_refusals(server: Server) -> None:
    await server.db.execute("CREATE TABLE public.secrets (id int PRIMARY KEY)")
    client = await server.connect(server.token())
    denied = await client.request({"type": "subscribe", "channel": "db:secrets"})
    assert denied["type"] == "error" and denied["code"] == "REALTIME_UNAUTHORIZED"
    bad = await client.request(
        {"type": "subscribe", "channel": "db:secrets", "filter": {"event": "MERGE"}}
    )
    assert bad["code"] == "INVALID_FILTER"
    refused = await client.request(
        {"type": "publish", "channel": "db:secrets", "event": "e", "payload": {}}
    )
    assert refused["code"] in {"REALTIME_NOT_SUBSCRIBED", "INVALID_CHANNEL"}


async def test_truncate_reaches_every_authorized_subscriber(server: Server) -> None:
    await _owned_posts(server)
    alice = str(uuid.uuid4())
    filters = {
        "all": {"event": "*"},
        "truncates": {"event": "TRUNCATE"},  # sees none of the rows (RLS)
        "inserts": {"event": "INSERT"},
        "row_filter": {"event": "*", "column": "title", "op": "neq", "value": "x"},
    }
    clients = {}
    for name, flt in filters.items():
        sub = alice if name == "all" else str(uuid.uuid4())
        clients[name] = await server.connect(server.token(sub=sub))
        reply = await clients[name].request(
            {"type": "subscribe", "channel": "db:posts", "filter": flt}
        )
        assert reply["type"] == "subscribed", reply
    await server.db.execute(
        "INSERT INTO posts VALUES ($1, $2, 'Hello')", uuid.uuid4(), uuid.UUID(alice)
    )
    # RLS looks rows up when routing: let the INSERT arrive before the row is gone
    inserted = await clients["all"].expect("message", timeout=10)
    assert inserted["event"] == "INSERT"
    await server.db.execute("TRUNCATE posts")
    for name in ("all", "truncates"):
        frame = await clients[name].expect("message", timeout=10)
        assert frame["channel"] == "db:posts" and frame["event"] == "TRUNCATE", (name, frame)
        payload = frame["payload"]
        assert set(payload) == {"schema", "table", "commit_timestamp", "eventType", "new", "old"}
        assert (payload["schema"], payload["table"], payload["eventType"]) == (
            "public",
            "posts",
            "TRUNCATE",
        )
        assert (payload["new"], payload["old"]) == (None, None)
        assert payload["commit_timestamp"].endswith("Z")
    # an INSERT-only filter and a row filter never get it; the pong proves nothing is queued
    for name in ("inserts", "row_filter"):
        client = clients[name]
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        assert [f for f in client.inbox if f["type"] == "message"] == [], name


async def test_many_users_in_one_transaction_each_get_their_rows(server: Server) -> None:
    """20 users subscribed to one RLS table, 60 rows in one transaction (so one batch,
    one visibility query): each user receives exactly its own 3 rows, in commit order."""
    await server.db.execute(
        """
        CREATE TABLE public.items (id bigserial PRIMARY KEY, owner uuid NOT NULL, n int);
        CREATE INDEX ON public.items (owner);
        GRANT SELECT ON public.items TO authenticated;
        ALTER TABLE public.items ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_items ON public.items FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await server.wait_streaming()
    users = [str(uuid.uuid4()) for _ in range(20)]
    clients = [await server.connect(server.token(sub=u)) for u in users]
    for client in clients:
        reply = await client.request({"type": "subscribe", "channel": "db:items"})
        assert reply["type"] == "subscribed", reply
    await server.db.execute(
        "INSERT INTO items (owner, n) SELECT o, g FROM generate_series(1, 3) g, "
        "unnest($1::uuid[]) o ORDER BY g, o",
        users,
    )
    for user, client in zip(users, clients, strict=True):
        got = [await client.expect("message", timeout=10) for _ in range(3)]
        assert [f["payload"]["new"]["owner"] for f in got] == [user] * 3
        assert [f["payload"]["new"]["n"] for f in got] == [1, 2, 3]
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        assert [f for f in client.inbox if f["type"] == "message"] == []
