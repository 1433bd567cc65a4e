"""`db:<table>` channels end to end: a WebSocket subscriber receives committed changes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conftest import Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def _wait_streaming(server: Server) -> None:
    feed = server.app["changes"]
    for _ in range(200):
        if feed.status().get("state") == "streaming":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"change feed not streaming: {feed.status()}")


async def test_changes_reach_subscribers_with_rls_per_user(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.posts (id uuid PRIMARY KEY, owner uuid, title text);
        GRANT SELECT ON public.posts TO authenticated;
        ALTER TABLE public.posts ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_posts ON public.posts FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await _wait_streaming(server)
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
