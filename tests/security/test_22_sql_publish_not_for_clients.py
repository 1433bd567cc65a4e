"""Finding 22: SQL realtime.publish() (SECURITY DEFINER, 'system' messages past the
publish policies) is not for client roles; publish_items, which takes the caller's role
and sender from its arguments, is the server's alone. (realtime.publish_batch, which did
the same, is dropped: tests/db/test_schema_equivalence.py.)"""

from __future__ import annotations

import asyncpg
import pytest
from tests.conftest import Server

FUNCTIONS = [
    "realtime.publish(text, text, jsonb)",
    "realtime.publish_items(jsonb, text)",
]


async def test_client_roles_cannot_call_sql_publish(server: Server) -> None:
    await server.create_channel("news:*")
    for function in FUNCTIONS:
        for role in ("anon", "authenticated"):
            allowed = await server.db.fetchval(
                "SELECT has_function_privilege($1, $2, 'EXECUTE')", role, function
            )
            assert not allowed, (role, function)
        public = await server.db.fetchval(
            "SELECT coalesce(bool_or(a.grantee = 0), false) FROM pg_proc p,"
            " aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
            " WHERE p.oid = $1::regprocedure AND a.privilege_type = 'EXECUTE'",
            function,
        )
        assert not public, ("PUBLIC", function)
    async with server.db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE authenticated")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT realtime.publish('news:1', 'e', '{\"forged\": true}')")
    assert await server.db.fetchval("SELECT count(*) FROM realtime.messages") == 0


async def test_the_owner_and_admins_still_publish_from_sql(server: Server) -> None:
    await server.create_channel("news:*")
    client = await server.connect(server.token())
    await client.subscribe("news:1")
    await server.db.fetchval("SELECT realtime.publish('news:1', 'e', '{}')")  # the owner
    assert (await client.expect("message"))["senderType"] == "system"
    async with server.db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE project_admin")
        assert await conn.fetchval("SELECT realtime.publish('news:1', 'e', '{}')") is not None
    assert (await client.expect("message"))["senderType"] == "system"
    # and publishing over WebSocket, which goes through publish_items, is unchanged
    assert (await client.publish("news:1", "e", {}))["type"] == "published"
