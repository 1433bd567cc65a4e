"""Finding 9: an operator decides which tables `db:` channels may publish
(`--changes-tables`); a table dropped and created again is published again.

Before the fix, any role with SELECT on a table added it to the publication for good,
and every subscribe ran the publish check again.
"""

from __future__ import annotations

import pytest
from tests.conftest import API_KEY, Server, make_settings

from pgrealtime import keys
from pgrealtime.changes.tables import TableAllowList
from pgrealtime.config import add_server_flags, settings_from_args


@pytest.fixture
def server_settings():
    return make_settings(changes=True, changes_tables=["public.allowed_*", "shop.orders"])


async def _published(server: Server) -> set[str]:
    rows = await server.db.fetch(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
        server.app[keys.CHANGES].config.publication,
    )
    return {r[0] for r in rows}


async def test_only_listed_tables_are_published(server: Server) -> None:
    await server.db.execute(
        """
        CREATE TABLE public.allowed_posts (id int PRIMARY KEY);
        CREATE TABLE public.other (id int PRIMARY KEY);
        GRANT SELECT ON public.allowed_posts, public.other TO authenticated, project_admin;
        """
    )
    await server.wait_streaming()
    for credential in (server.token(), API_KEY):
        client = await server.connect(credential)
        refused = await client.subscribe("db:other")
        assert refused["type"] == "error" and refused["code"] == "TABLE_NOT_ALLOWED", refused
        assert "--changes-tables" in refused["message"]
        # refused before anything is looked up: a missing table gets the same answer
        missing = await client.subscribe("db:no_such_table")
        assert missing["code"] == "TABLE_NOT_ALLOWED", missing
        ok = await client.subscribe("db:allowed_posts")
        assert ok["type"] == "subscribed", ok
    assert await _published(server) == {"public.allowed_posts"}
    await server.db.execute("INSERT INTO allowed_posts VALUES (1)")
    frame = await client.expect("message", timeout=20)
    assert frame["payload"]["new"] == {"id": 1}


async def test_a_table_created_again_is_published_again(server: Server) -> None:
    """Dropping a table takes it out of the publication: the next subscriber to the new
    table of that name must put it back (a remembered "published" would not)."""
    create = """
        CREATE TABLE public.allowed_items (id int PRIMARY KEY);
        GRANT SELECT ON public.allowed_items TO authenticated;
    """
    await server.db.execute(create)
    await server.wait_streaming()
    first = await server.connect(server.token())
    assert (await first.subscribe("db:allowed_items"))["type"] == "subscribed"
    await server.db.execute("DROP TABLE public.allowed_items")
    assert "public.allowed_items" not in await _published(server)
    await server.db.execute(create)
    second = await server.connect(server.token())
    assert (await second.subscribe("db:allowed_items"))["type"] == "subscribed"
    assert "public.allowed_items" in await _published(server)
    await server.db.execute("INSERT INTO allowed_items VALUES (7)")
    frame = await second.expect("message", timeout=20)
    assert frame["payload"]["new"] == {"id": 7}


def test_flag_and_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.setenv("PGREALTIME_CHANGES_TABLES", "posts, shop.* ,")
    parser = argparse.ArgumentParser()
    add_server_flags(parser)
    parser.add_argument("--database-url")
    settings = settings_from_args(parser.parse_args([]))
    assert settings.changes_tables == ["posts", "shop.*"]
    allowed = TableAllowList(settings.changes_tables)
    assert allowed.allows("public", "posts") and allowed.allows("shop", "orders")
    assert not allowed.allows("other", "posts") and not allowed.allows("public", "orders")
    assert TableAllowList([]).allows("any", "table")
