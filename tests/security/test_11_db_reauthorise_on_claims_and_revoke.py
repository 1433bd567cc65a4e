"""Finding 11: `db:` subscriptions follow the caller's current claims and the table's
current grants. A second `auth` frame of the same identity (same role and sub, other
claims) must be what row level security sees from then on; and a `REVOKE SELECT`
must stop deliveries on a table without row level security too (privileges are
checked again per batch, per role)."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Client, Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def _subscribe(client: Client, channel: str) -> None:
    reply = await client.request({"type": "subscribe", "channel": channel})
    assert reply["type"] == "subscribed", reply


async def test_new_claims_of_the_same_user_govern_rls(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.memos (id int PRIMARY KEY, team text, body text);
        GRANT SELECT ON public.memos TO authenticated;
        ALTER TABLE public.memos ENABLE ROW LEVEL SECURITY;
        CREATE POLICY team_memos ON public.memos FOR SELECT TO authenticated
          USING (team = auth.jwt() ->> 'email');
        """
    )
    await server.wait_streaming()
    user = str(uuid.uuid4())
    client = await server.connect(server.token(sub=user, email="red"))
    await _subscribe(client, "db:memos")
    # same role and sub, new claims: the subscription stays, under the new claims
    reply = await client.auth(server.token(sub=user, email="blue"))
    assert reply["type"] == "auth_success", reply
    await server.db.execute("INSERT INTO memos VALUES (1, 'red', 'for the red team')")
    await server.db.execute("INSERT INTO memos VALUES (2, 'blue', 'for the blue team')")
    first = await client.expect("message", timeout=10)
    assert first["payload"]["new"]["team"] == "blue"  # red's memo was never sent


async def test_revoke_select_stops_deliveries(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.bulletins (id int PRIMARY KEY, title text);  -- no RLS
        GRANT SELECT ON public.bulletins TO authenticated, anon;
        """
    )
    await server.wait_streaming()
    member = await server.connect(server.token())
    visitor = await server.connect(server.token(role="anon"))
    for client in (member, visitor):
        await _subscribe(client, "db:bulletins")
    await server.db.execute("INSERT INTO bulletins VALUES (1, 'before')")
    for client in (member, visitor):
        assert (await client.expect("message", timeout=10))["payload"]["new"]["id"] == 1

    await server.db.execute("REVOKE SELECT ON public.bulletins FROM authenticated")
    await server.db.execute("INSERT INTO bulletins VALUES (2, 'after the revoke')")
    await server.db.execute("DELETE FROM bulletins WHERE id = 1")
    await server.db.execute("TRUNCATE bulletins")
    assert (await visitor.expect("message", timeout=10, event="TRUNCATE"))["type"] == "message"
    assert (await member.request({"type": "ping"}))["type"] == "pong"
    assert [f for f in member.inbox if f["type"] == "message"] == []

    # granted again: deliveries resume, the subscription was kept
    await server.db.execute("GRANT SELECT ON public.bulletins TO authenticated")
    await server.db.execute("INSERT INTO bulletins VALUES (3, 'granted again')")
    assert (await member.expect("message", timeout=10))["payload"]["new"]["id"] == 3
