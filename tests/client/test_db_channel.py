"""A db:<table> subscription with a filter through the client: only the rows the
caller's RLS policies show, and only those the filter keeps."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import Server, make_settings

from pgrealtime.client import connect


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


async def test_db_subscription_with_filter_and_rls(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.tasks (id int PRIMARY KEY, owner uuid, status text);
        GRANT SELECT ON public.tasks TO authenticated;
        ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_rows ON public.tasks FOR SELECT TO authenticated
          USING (owner = auth.uid());
        """
    )
    await server.wait_streaming()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with connect(server.base, token=server.token(sub=str(alice))) as client:
        sub = await client.subscribe(
            "db:tasks", filter={"event": "INSERT", "column": "status", "value": "open"}
        )
        await server.db.execute("INSERT INTO tasks VALUES (1, $1, 'open')", bob)
        await server.db.execute("INSERT INTO tasks VALUES (2, $1, 'done')", alice)
        await server.db.execute("INSERT INTO tasks VALUES (3, $1, 'open')", alice)
        change = await sub.get(timeout=10)
        assert change.event == "INSERT" and change.payload["new"]["id"] == 3
        assert change.position is None and change.message_id is None
        await client.ping()
        assert sub._queue.empty()
