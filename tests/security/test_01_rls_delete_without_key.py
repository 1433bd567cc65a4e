"""Finding 1: a DELETE on a table with row level security but no primary key (REPLICA
IDENTITY FULL, as TABLE_NOT_PUBLISHABLE suggests) must not hand the whole deleted row
to every subscriber: the row's key is unknown, so `old` is sent as null."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Client, Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def _subscribed(server: Server, user: str) -> Client:
    client = await server.connect(server.token(sub=user))
    reply = await client.request({"type": "subscribe", "channel": "db:diary"})
    assert reply["type"] == "subscribed", reply
    return client


async def test_delete_without_key_reveals_no_column(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.diary (owner uuid, entry text);  -- no primary key
        ALTER TABLE public.diary REPLICA IDENTITY FULL;
        GRANT SELECT ON public.diary TO authenticated;
        ALTER TABLE public.diary ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_entries ON public.diary FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await server.wait_streaming()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    a = await _subscribed(server, alice)
    b = await _subscribed(server, bob)
    await server.db.execute("INSERT INTO diary VALUES ($1, 'alice secret')", uuid.UUID(alice))
    await server.db.execute("DELETE FROM diary")
    deleted = await a.expect("message", timeout=10)  # routed: bob's share is out too
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    seen = [f for f in b.inbox if f["type"] == "message"]
    assert "alice secret" not in repr(seen) and alice not in repr(seen)
    assert [(f["event"], f["payload"]["old"], f["payload"]["new"]) for f in seen] == [
        ("DELETE", None, None)
    ]
    # the owner learns that a row went, but not which: its key is unknown
    assert deleted["event"] == "DELETE" and deleted["payload"]["old"] is None
