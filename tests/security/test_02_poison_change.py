"""Finding 2: one poison change must not stop the `db:` feed for every table.

Before the fix, a jsonb value nested 300 levels (orjson reads it, cannot write it), one
nested 1100 levels (RecursionError in the reader), or an unchanged TOAST value whose
column was renamed in the same transaction (the fill-in query fails) made the batch
fail, be re-read from the slot and fail again, for ever: no later change reached
anyone and the slot kept WAL. Now the bad value or column costs only itself (deep JSON
is delivered as its text; the TOAST column is left out of `new`), it is counted in
the feed status, and later changes are delivered.
"""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Client, Server, make_settings

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(changes=True)


def _nested(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


async def _subscribe(server: Server, table: str) -> Client:
    client = await server.connect(server.token())
    reply = await client.request({"type": "subscribe", "channel": f"db:{table}"})
    assert reply["type"] == "subscribed", reply
    return client


async def _next_message(client: Client) -> dict:
    """The next change frame; fails after 20 s (heartbeats must not keep it waiting)."""
    return await asyncio.wait_for(client.expect("message", timeout=20), 20)


async def _next_insert(client: Client) -> dict:
    frame = await _next_message(client)
    assert frame["event"] == "INSERT", frame
    return frame["payload"]["new"]


@pytest.mark.parametrize("levels", [300, 1100])
async def test_deeply_nested_jsonb_does_not_stop_later_changes(server: Server, levels: int):
    await server.db.execute(
        """
        CREATE TABLE public.docs (id int PRIMARY KEY, body jsonb);
        GRANT SELECT ON public.docs TO authenticated;
        CREATE TABLE public.other (id int PRIMARY KEY);
        GRANT SELECT ON public.other TO authenticated;
        """
    )
    await server.wait_streaming()
    docs = await _subscribe(server, "docs")
    other = await _subscribe(server, "other")
    await server.db.execute("INSERT INTO docs VALUES (1, $1::jsonb)", _nested(levels))
    await server.db.execute("INSERT INTO docs VALUES (2, '{\"ok\": true}')")
    await server.db.execute("INSERT INTO other VALUES (7)")

    deep = await _next_insert(docs)
    assert deep["id"] == 1
    # too deep to send as JSON: delivered as the JSON text PostgreSQL printed
    assert isinstance(deep["body"], str) and deep["body"].replace(" ", "") == _nested(levels)
    assert await _next_insert(docs) == {"id": 2, "body": {"ok": True}}
    assert await _next_insert(other) == {"id": 7}
    status = server.app[keys.CHANGES].status()
    assert status["values_as_text"] >= 1
    assert status["stuck_since_lsn"] is None


async def test_toast_fill_in_for_a_renamed_column_does_not_stop_the_feed(server: Server):
    await server.db.execute(
        """
        CREATE TABLE public.pages (id int PRIMARY KEY, n int, big text);
        ALTER TABLE public.pages ALTER COLUMN big SET STORAGE EXTERNAL;
        GRANT SELECT ON public.pages TO authenticated;
        INSERT INTO public.pages VALUES (1, 0, repeat('x', 20000));
        """
    )
    await server.wait_streaming()
    pages = await _subscribe(server, "pages")
    async with server.db.acquire() as conn, conn.transaction():
        # `big` is unchanged (not in the WAL); by the time the reader fetches it, it
        # has another name
        await conn.execute("UPDATE pages SET n = 1 WHERE id = 1")
        await conn.execute("ALTER TABLE pages RENAME COLUMN big TO renamed")
    await server.db.execute("INSERT INTO pages VALUES (2, 2, 'small')")
    updated = await _next_message(pages)
    assert updated["event"] == "UPDATE", updated
    assert updated["payload"]["new"] == {"id": 1, "n": 1}  # `big` left out, not invented
    assert await _next_insert(pages) == {"id": 2, "n": 2, "renamed": "small"}
    assert server.app[keys.CHANGES].status()["toast_fill_failures"] >= 1


async def test_feed_status_shows_stuck_position_and_slot_lag(server: Server):
    await server.wait_streaming()
    status = server.app[keys.CHANGES].status()
    for field in (
        "stuck_since_lsn",
        "stuck_since",
        "consecutive_failures",
        "last_error",
        "lag_bytes",
        "max_failures",
        "skipped_changes",
        "values_as_text",
        "toast_fill_failures",
    ):
        assert field in status, field
    assert status["stuck_since_lsn"] is None and status["consecutive_failures"] == 0
    assert status["max_failures"] == 3
