"""The squashed schema is the schema: a database built by the thirteen legacy migrations
and one built by today's migrate (001_baseline + functions/) have the same catalog, and
a legacy database upgraded by today's migrate becomes exactly the fresh one."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
from tests.db.legacy import apply_legacy_migrations, empty_database

from pgrealtime.db.migrate import BASELINE, MigrationError, apply_migrations, schema_files

SCHEMAS = ["realtime", "auth"]

# What the squash changed on purpose: the role allow-list became one function that the
# three role checks call, and the unused realtime.publish_batch was dropped. Since then:
# webhook_url_host follows the one Python rule for a URL's host (policy.url_host);
# notify_channels_changed names the changing server (its origin) in the payload.
CHANGED_FUNCTIONS = {
    "realtime.allowed_roles()",
    "realtime.assume_caller(text,text,text)",
    "realtime.publish_items(jsonb,text)",
    "realtime.visible_keys(text,text[],text[],text)",
    "realtime.publish_batch(text[],text[],text[],text[],jsonb[],uuid[],text)",
    "realtime.webhook_url_host(text)",
    "realtime.notify_channels_changed()",
    # no NOTIFY for a server whose messages a broker carries (the scale-out issue)
    "realtime.notify_message()",
}

# Objects of the schema files after the baseline (not in the legacy migrations): left
# out where the squashed baseline is compared with the legacy migrations.
AFTER_BASELINE = ("change_relay",)  # 002_change_relay

QUERIES = {
    "columns": """
        SELECT table_schema, table_name, column_name, ordinal_position, data_type, udt_name,
               column_default, is_nullable, is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = ANY($1)
          AND table_name <> 'schema_migrations'
        ORDER BY 1, 2, 4""",
    "tables": """
        SELECT c.oid::regclass::text, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               c.relreplident
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1) AND c.relname NOT LIKE 'schema_migrations%'
        ORDER BY 1""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = ANY($1) AND conrelid::regclass::text <> 'realtime.schema_migrations'
        ORDER BY 1, 2""",
    "indexes": """
        SELECT schemaname, indexname, indexdef FROM pg_indexes
        WHERE schemaname = ANY($1) AND tablename <> 'schema_migrations' ORDER BY 1, 2""",
    "sequences": """
        SELECT schemaname, sequencename, data_type::text, start_value, increment_by
        FROM pg_sequences WHERE schemaname = ANY($1) ORDER BY 1, 2""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual,
               with_check
        FROM pg_policies WHERE schemaname = ANY($1) ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(t.oid), tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1) AND NOT t.tgisinternal ORDER BY 1, 2""",
    "table_privileges": """
        SELECT table_schema, table_name, grantor, grantee, privilege_type, is_grantable
        FROM information_schema.role_table_grants
        WHERE table_schema = ANY($1) AND table_name <> 'schema_migrations'
        ORDER BY 1, 2, 3, 4, 5""",
    "schema_privileges": """
        SELECT n.nspname, a.grantee::regrole::text, a.privilege_type
        FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
        WHERE n.nspname = ANY($1) ORDER BY 1, 2, 3""",
    "config": "SELECT to_jsonb(c)::text FROM realtime.config c",
    "config_default": """
        SELECT column_default FROM information_schema.columns
        WHERE table_schema = 'realtime' AND table_name = 'config'
          AND column_name = 'retention_days'""",
}

FUNCTIONS = """
    SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ANY($1) ORDER BY 1"""

FUNCTION_PRIVILEGES = """
    SELECT p.oid::regprocedure::text AS signature,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee,
           a.privilege_type
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
         aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    WHERE n.nspname = ANY($1) ORDER BY 1, 2, 3"""


def _normalise(definition: str) -> str:
    """A function's definition without trailing blanks and blank-line differences."""
    lines = [line.rstrip() for line in definition.strip().splitlines()]
    return re.sub(r"\n{2,}", "\n", "\n".join(lines))


async def catalog(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything the schema is made of, as comparable values."""
    snapshot: dict[str, Any] = {}
    for name, query in QUERIES.items():
        args = [SCHEMAS] if "$1" in query else []
        snapshot[name] = [tuple(r) for r in await conn.fetch(query, *args)]
    snapshot["functions"] = {
        r["signature"]: _normalise(r["definition"]) for r in await conn.fetch(FUNCTIONS, SCHEMAS)
    }
    snapshot["function_privileges"] = [
        tuple(r) for r in await conn.fetch(FUNCTION_PRIVILEGES, SCHEMAS)
    ]
    return snapshot


def _without(snapshot: dict[str, Any], signatures: set[str]) -> dict[str, Any]:
    """The snapshot minus the given functions (definitions and privileges)."""
    kept = dict(snapshot)
    kept["functions"] = {k: v for k, v in snapshot["functions"].items() if k not in signatures}
    kept["function_privileges"] = [
        row for row in snapshot["function_privileges"] if row[0] not in signatures
    ]
    return kept


@pytest.fixture
async def fresh(pg_admin_url: str) -> dict[str, Any]:
    async with empty_database(pg_admin_url, "equivalence_fresh") as conn:
        assert await apply_migrations(conn) == [v for v, _ in schema_files()]
        return await catalog(conn)


def _baseline_only(rows: list[tuple]) -> list[tuple]:
    return [r for r in rows if not any(name in repr(r) for name in AFTER_BASELINE)]


async def test_squashed_schema_equals_the_legacy_migrations(
    pg_admin_url: str, fresh: dict[str, Any]
) -> None:
    async with empty_database(pg_admin_url, "equivalence_legacy") as conn:
        assert len(await apply_legacy_migrations(conn)) == 13
        legacy = await catalog(conn)
    assert fresh["config"] == [('{"id": true, "retention_days": 30}',)]
    assert fresh["triggers"] and fresh["policies"] and fresh["functions"]
    for part in QUERIES:
        assert _baseline_only(fresh[part]) == legacy[part], part
    changed = {
        s
        for s in fresh["functions"].keys() | legacy["functions"].keys()
        if fresh["functions"].get(s) != legacy["functions"].get(s)
    }
    assert changed == CHANGED_FUNCTIONS
    baseline = {k: _baseline_only(v) if k in QUERIES else v for k, v in fresh.items()}
    assert _without(baseline, CHANGED_FUNCTIONS) == _without(legacy, CHANGED_FUNCTIONS)
    # the allow-list changed form only: the old bodies with the list in their place
    for signature in CHANGED_FUNCTIONS - {
        "realtime.allowed_roles()",
        "realtime.publish_batch(text[],text[],text[],text[],jsonb[],uuid[],text)",
        "realtime.webhook_url_host(text)",
        "realtime.notify_channels_changed()",
        "realtime.notify_message()",
    }:
        old = legacy["functions"][signature]
        assert "('anon', 'authenticated', 'project_admin')" in old
        assert "realtime.allowed_roles()" in fresh["functions"][signature]


async def test_legacy_database_upgrades_to_exactly_the_fresh_one(
    pg_admin_url: str, fresh: dict[str, Any]
) -> None:
    async with empty_database(pg_admin_url, "equivalence_upgrade") as conn:
        await apply_legacy_migrations(conn)
        await conn.execute("UPDATE realtime.config SET retention_days = 7")
        await conn.execute("INSERT INTO realtime.channels (pattern) VALUES ('room:*')")
        await conn.execute("SELECT realtime.publish('room:1', 'e', '{}')")
        later = [v for v, _ in schema_files() if v != BASELINE]
        assert await apply_migrations(conn) == later  # recognised: the baseline is not run
        assert await apply_migrations(conn) == []  # and again, idempotent
        rows = await conn.fetch("SELECT version FROM realtime.schema_migrations")
        versions = {r["version"] for r in rows}
        assert BASELINE in versions and "013_channel_webhook_secrets" in versions
        upgraded = await catalog(conn)
        # the data and settings stay; messages go on from their positions
        assert upgraded["config"] == [('{"id": true, "retention_days": 7}',)]
        await conn.execute("SELECT realtime.publish('room:1', 'e', '{}')")
        assert await conn.fetchval("SELECT max(position) FROM realtime.messages") == 2
    upgraded["config"] = fresh["config"]
    assert upgraded == fresh


async def test_a_half_migrated_legacy_database_is_refused(pg_admin_url: str) -> None:
    async with empty_database(pg_admin_url, "equivalence_half") as conn:
        await apply_legacy_migrations(conn, until="005")
        with pytest.raises(MigrationError, match="005_subscribe_batch"):
            await apply_migrations(conn)
        # nothing was changed: the old migrations can still be run to the end
        assert await conn.fetchval("SELECT count(*) FROM realtime.schema_migrations") == 4


async def test_functions_are_reapplied_at_every_start(db_url: str) -> None:
    """Changing a function is editing its file: the next start replaces the definition."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "CREATE OR REPLACE FUNCTION realtime.allowed_roles() RETURNS text[]"
            " LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '{}'::text[] $$"
        )
        assert await apply_migrations(conn) == []
        roles = await conn.fetchval("SELECT realtime.allowed_roles()")
        assert roles == ["anon", "authenticated", "project_admin"]
    finally:
        await conn.close()
