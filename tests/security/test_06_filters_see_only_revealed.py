"""Finding 6: a row filter on a DELETE of a table with row level security sees only
what is sent (the key), never the hidden columns of the old row. Otherwise a few
filtered subscriptions (`amount gt 50`, `amount lte 50`...) binary-search a column
the subscriber may not read."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Client, Server, make_settings


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def _subscribed(server: Server, user: str, flt: dict) -> Client:
    client = await server.connect(server.token(sub=user))
    reply = await client.request({"type": "subscribe", "channel": "db:ledger", "filter": flt})
    assert reply["type"] == "subscribed", reply
    return client


async def test_delete_filters_see_only_the_key(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.ledger (id int PRIMARY KEY, owner uuid, amount int);
        ALTER TABLE public.ledger REPLICA IDENTITY FULL;
        GRANT SELECT ON public.ledger TO authenticated;
        ALTER TABLE public.ledger ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_rows ON public.ledger FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await server.wait_streaming()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    deletes = {"event": "DELETE"}
    by_key = await _subscribed(server, bob, {**deletes, "column": "id", "value": 7})
    probes = [
        await _subscribed(server, bob, {**deletes, "column": "amount", "op": op, "value": 50})
        for op in ("gt", "lte", "neq")
    ]
    probes.append(await _subscribed(server, bob, {**deletes, "column": "owner", "value": alice}))
    owner = await _subscribed(
        server, alice, {**deletes, "column": "amount", "op": "gt", "value": 50}
    )
    await server.db.execute("INSERT INTO ledger VALUES (7, $1, 70)", uuid.UUID(alice))
    await server.db.execute("DELETE FROM ledger WHERE id = 7")

    # the key is revealed, so a filter on it still works
    deleted = await by_key.expect("message", timeout=10)
    assert deleted["payload"]["old"] == {"id": 7}
    # no filter on a hidden column matches, whatever it asks
    for probe in probes:
        assert (await probe.request({"type": "ping"}))["type"] == "pong"
        assert [f for f in probe.inbox if f["type"] == "message"] == []
    # nor for the owner: what a filter sees is what every subscriber is sent
    assert (await owner.request({"type": "ping"}))["type"] == "pong"
    assert [f for f in owner.inbox if f["type"] == "message"] == []
