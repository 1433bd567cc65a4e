"""Finding 15: subscribing to a table PostgreSQL cannot replicate (a catalog, an
unlogged or a temporary table) is refused with TABLE_NOT_PUBLISHABLE saying why.

Before the fix, ALTER PUBLICATION's error went up as INTERNAL_ERROR, with a traceback
logged at ERROR level for every such subscribe (log flooding).
"""

from __future__ import annotations

import logging

import pytest
from tests.conftest import API_KEY, Server, make_settings

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


@pytest.mark.parametrize(
    ("channel", "schema", "why"),
    [
        ("db:jobs_cache", "public", "unlogged"),
        ("db:pg_class", "pg_catalog", "system"),
        ("db:sql_features", "information_schema", "system"),
    ],
)
async def test_unpublishable_tables_get_a_clear_code(
    server: Server, caplog: pytest.LogCaptureFixture, channel: str, schema: str, why: str
) -> None:
    await server.db.execute(
        "CREATE UNLOGGED TABLE public.jobs_cache (id int PRIMARY KEY); "
        "GRANT SELECT ON public.jobs_cache TO authenticated, project_admin"
    )
    await server.wait_streaming()
    for credential in (API_KEY, server.token()):
        client = await server.connect(credential)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            reply = await client.request(
                {"type": "subscribe", "channel": channel, "filter": {"schema": schema}}
            )
        assert reply["type"] == "error", reply
        assert reply["code"] == "TABLE_NOT_PUBLISHABLE", reply
        assert why in reply["message"], reply
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    published = await server.db.fetchval(
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1",
        server.app[keys.CHANGES].config.publication,
    )
    assert published == 0
