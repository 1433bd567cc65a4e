"""Replica identity as an admin sets it: the `pgrealtime replica-identity` command (the
real console script), the REST route, and what subscribers then receive."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from tests.conftest import Server, make_settings

PGREALTIME = str(Path(sys.executable).parent / "pgrealtime")
ROUTE = "/api/realtime/tables/{}/replica-identity"


async def run_cli(*args: str, data_dir: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the installed console script."""
    env = {**os.environ, "PGREALTIME_DATA_DIR": str(data_dir)}
    env.pop("PGREALTIME_DATABASE_URL", None)
    env.pop("DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        PGREALTIME, "replica-identity", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def identity_of(db: asyncpg.Connection | asyncpg.Pool, table: str) -> str:
    return await db.fetchval(
        "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)", table
    )


# --- the command ---------------------------------------------------------------------


async def test_cli_sets_shows_and_reverts(db_url: str, tmp_path: Path) -> None:
    db = await asyncpg.connect(db_url)
    try:
        await db.execute('CREATE TABLE logs (id int, msg text); CREATE TABLE "Mixed Case" (a int)')
        code, out, _ = await run_cli("public.logs", "--database-url", db_url, data_dir=tmp_path)
        assert (code, out.strip()) == (0, "public.logs: replica identity default")

        code, out, err = await run_cli(
            "public.logs", "--full", "--database-url", db_url, data_dir=tmp_path
        )
        assert code == 0, err
        assert out.strip() == "public.logs: replica identity full (was default)"
        assert await identity_of(db, "public.logs") == "f"

        code, out, _ = await run_cli("logs", "--default", "--database-url", db_url,
                                     data_dir=tmp_path)  # fmt: skip
        assert (code, out.strip()) == (0, "public.logs: replica identity default (was full)")
        assert await identity_of(db, "public.logs") == "d"

        code, _, err = await run_cli(
            "public.Mixed Case", "--full", "--database-url", db_url, data_dir=tmp_path
        )
        assert code == 0, err
        assert await identity_of(db, 'public."Mixed Case"') == "f"
    finally:
        await db.close()


@pytest.mark.parametrize(
    "name, message",
    [
        ("public.nope", "error: table public.nope does not exist"),
        ("public.LOGS", "error: table public.LOGS does not exist"),  # case-sensitive
        ("nope.logs", "error: table nope.logs does not exist"),
        ("logs; DROP TABLE logs", "does not exist"),
        ("public.", "error: table name is empty"),
        ("public." + "x" * 64, "longer than 63 bytes"),
    ],
)
async def test_cli_unknown_or_bad_table_exits_2(
    db_url: str, tmp_path: Path, name: str, message: str
) -> None:
    db = await asyncpg.connect(db_url)
    try:
        await db.execute("CREATE TABLE logs (id int)")
        code, out, err = await run_cli(name, "--full", "--database-url", db_url,
                                       data_dir=tmp_path)  # fmt: skip
        assert (code, out) == (2, "")
        assert message in err
        assert await identity_of(db, "public.logs") == "d"
    finally:
        await db.close()


async def test_cli_usage_and_permission_errors(db_url: str, tmp_path: Path) -> None:
    code, _, err = await run_cli("public.logs", "--full", "--default", data_dir=tmp_path)
    assert code == 2 and "not allowed with argument" in err

    role = f"ri_cli_{os.getpid()}"
    db = await asyncpg.connect(db_url)
    try:
        await db.execute(f"CREATE TABLE logs (id int); CREATE ROLE {role} LOGIN")
        other_url = db_url.replace("//postgres@", f"//{role}@", 1)
        code, _, err = await run_cli("public.logs", "--full", "--database-url", other_url,
                                     data_dir=tmp_path)  # fmt: skip
        assert code == 1
        assert "cannot change table public.logs" in err and "owner" in err
        assert await identity_of(db, "public.logs") == "d"

        await db.execute("ALTER TABLE logs REPLICA IDENTITY FULL")
        await db.execute("CREATE PUBLICATION ri_cli FOR TABLE logs")
        code, _, err = await run_cli("public.logs", "--default", "--database-url", db_url,
                                     data_dir=tmp_path)  # fmt: skip
        assert code == 1 and "is published (ri_cli) and has no primary key" in err
        assert await identity_of(db, "public.logs") == "f"
    finally:
        await db.execute(f"DROP ROLE IF EXISTS {role}")
        await db.close()


# --- the REST route ------------------------------------------------------------------


async def test_rest_get_and_put(server: Server) -> None:
    await server.db.execute('CREATE TABLE logs (id int, msg text); CREATE TABLE "Odd Name" (a int)')
    status, body = await server.api("GET", ROUTE.format("public.logs"))
    assert (status, body) == (200, {"schema": "public", "table": "logs",
                                    "replicaIdentity": "default"})  # fmt: skip

    status, body = await server.api("PUT", ROUTE.format("public.logs"),
                                    json={"replicaIdentity": "full"})  # fmt: skip
    assert (status, body) == (200, {"schema": "public", "table": "logs",
                                    "replicaIdentity": "full"})  # fmt: skip
    assert await identity_of(server.db, "public.logs") == "f"
    status, body = await server.api("GET", ROUTE.format("logs"))  # no dot: schema public
    assert (status, body["replicaIdentity"]) == (200, "full")

    status, body = await server.api("PUT", ROUTE.format("logs"),
                                    json={"replicaIdentity": "default"})  # fmt: skip
    assert (status, body["replicaIdentity"]) == (200, "default")
    assert await identity_of(server.db, "public.logs") == "d"

    status, body = await server.api("PUT", ROUTE.format("public.Odd%20Name"),
                                    json={"replicaIdentity": "full"})  # fmt: skip
    assert (status, body["table"]) == (200, "Odd Name")
    assert await identity_of(server.db, 'public."Odd Name"') == "f"


async def test_rest_errors(server: Server) -> None:
    await server.db.execute("CREATE TABLE logs (id int)")
    for method, kw in (("GET", {}), ("PUT", {"json": {"replicaIdentity": "full"}})):
        status, body = await server.api(method, ROUTE.format("public.nope"), **kw)
        assert (status, body["error"]) == (404, "REALTIME_TABLE_NOT_FOUND"), body
        assert body["message"] == "Table public.nope not found"
        status, body = await server.api(method, ROUTE.format(".logs"), **kw)
        assert (status, body["error"]) == (400, "INVALID_INPUT"), body
        assert "schema name is empty" in body["message"]
        status, body = await server.api(method, ROUTE.format("public." + "x" * 64), **kw)
        assert status == 400 and "longer than 63 bytes" in body["message"]

    bad_bodies = [
        {"json": {"replicaIdentity": "nothing"}},
        {"json": {"replicaIdentity": "FULL"}},
        {"json": {}},
        {"json": {"replicaIdentity": "full", "extra": 1}},
        {"json": ["full"]},
        {"data": b"{not json", "headers": {**server.admin, "Content-Type": "application/json"}},
        {"data": b""},
    ]
    for kw in bad_bodies:
        status, body = await server.api("PUT", ROUTE.format("public.logs"), **kw)
        assert (status, body["error"]) == (400, "INVALID_INPUT"), (kw, body)
    assert await identity_of(server.db, "public.logs") == "d"

    await server.db.execute(
        "ALTER TABLE logs REPLICA IDENTITY FULL; CREATE PUBLICATION ri_rest FOR TABLE logs"
    )
    status, body = await server.api("PUT", ROUTE.format("public.logs"),
                                    json={"replicaIdentity": "default"})  # fmt: skip
    assert (status, body["error"]) == (409, "REALTIME_REPLICA_IDENTITY_REQUIRED"), body
    assert "PostgreSQL would refuse its UPDATE and DELETE" in body["message"]
    assert await identity_of(server.db, "public.logs") == "f"
    await server.db.execute("DROP PUBLICATION ri_rest; ALTER TABLE logs REPLICA IDENTITY DEFAULT")

    no_key = {"Content-Type": "application/json"}
    status, body = await server.api("PUT", ROUTE.format("public.logs"), headers=no_key,
                                    json={"replicaIdentity": "full"})  # fmt: skip
    assert (status, body["error"]) == (401, "AUTH_UNAUTHORIZED")
    status, body = await server.api("GET", ROUTE.format("public.logs"),
                                    headers={"Authorization": "Bearer ik_wrong"})  # fmt: skip
    assert (status, body["error"]) == (401, "AUTH_INVALID_TOKEN")
    user = {"Authorization": f"Bearer {server.token()}"}
    status, body = await server.api("PUT", ROUTE.format("public.logs"), headers=user,
                                    json={"replicaIdentity": "full"})  # fmt: skip
    assert (status, body["error"]) == (403, "AUTH_FORBIDDEN")
    assert await identity_of(server.db, "public.logs") == "d"


# --- what subscribers get ------------------------------------------------------------


class TestWithChanges:
    @pytest.fixture
    def server_settings(self):
        return make_settings(changes=True)

    async def test_full_makes_a_keyless_table_subscribable_and_old_rows_whole(
        self, server: Server
    ) -> None:
        await server.db.execute(
            """
            CREATE TABLE logs (id int, msg text);
            CREATE TABLE posts (id int PRIMARY KEY, title text, body text);
            GRANT SELECT ON logs, posts TO authenticated;
            INSERT INTO posts VALUES (1, 'first', 'b');
            """
        )
        await server.wait_streaming()
        client = await server.connect(server.token())
        refused = await client.subscribe("db:logs")
        assert refused["code"] == "TABLE_NOT_PUBLISHABLE", refused
        assert "pgrealtime replica-identity public.logs --full" in refused["message"]

        status, _ = await server.api("PUT", ROUTE.format("public.logs"),
                                     json={"replicaIdentity": "full"})  # fmt: skip
        assert status == 200
        assert (await client.subscribe("db:logs"))["type"] == "subscribed"
        assert (await client.subscribe("db:posts"))["type"] == "subscribed"

        await server.db.execute("INSERT INTO logs VALUES (1, 'one')")
        await server.db.execute("UPDATE logs SET msg = 'uno'")
        await server.db.execute("UPDATE posts SET title = 'second'")  # identity DEFAULT
        inserted = await client.expect("message", channel="db:logs", timeout=10)
        assert inserted["payload"]["new"] == {"id": 1, "msg": "one"}
        updated = await client.expect("message", channel="db:logs", timeout=10)
        assert updated["event"] == "UPDATE"
        assert updated["payload"]["old"] == {"id": 1, "msg": "one"}  # the whole old row
        assert updated["payload"]["new"] == {"id": 1, "msg": "uno"}
        post = await client.expect("message", channel="db:posts", timeout=10)
        assert post["payload"]["old"] == {"id": 1}  # DEFAULT: only the key

        status, _ = await server.api("PUT", ROUTE.format("public.posts"),
                                     json={"replicaIdentity": "full"})  # fmt: skip
        assert status == 200
        await server.db.execute("UPDATE posts SET title = 'third'")
        post = await client.expect("message", channel="db:posts", timeout=10)
        assert post["payload"]["old"] == {"id": 1, "title": "second", "body": "b"}
        assert post["payload"]["new"] == {"id": 1, "title": "third", "body": "b"}
