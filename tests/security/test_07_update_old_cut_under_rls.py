"""Finding 7: row level security is judged on the row as it is when the batch is
routed, so the `old` of an UPDATE (whole under REPLICA IDENTITY FULL) is a version
nobody checked. After an ownership transfer the new owner must not receive the
previous owner's version: under RLS `old` is cut to the key (null without one)."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def test_new_owner_does_not_get_the_previous_version(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.drafts (id int PRIMARY KEY, owner uuid, body text);
        ALTER TABLE public.drafts REPLICA IDENTITY FULL;
        GRANT SELECT ON public.drafts TO authenticated;
        ALTER TABLE public.drafts ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_drafts ON public.drafts FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await server.wait_streaming()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await server.db.execute(
        "INSERT INTO drafts VALUES (1, $1, 'alice private draft')", uuid.UUID(alice)
    )
    b = await server.connect(server.token(sub=bob))
    reply = await b.request({"type": "subscribe", "channel": "db:drafts"})
    assert reply["type"] == "subscribed", reply
    await server.db.execute(
        "UPDATE drafts SET owner = $1, body = 'handed to bob' WHERE id = 1", uuid.UUID(bob)
    )
    updated = await b.expect("message", timeout=10)
    assert updated["event"] == "UPDATE"
    assert updated["payload"]["new"] == {"id": 1, "owner": bob, "body": "handed to bob"}
    assert updated["payload"]["old"] == {"id": 1}  # not alice's version of the row
