"""Finding 19: any role may NOTIFY realtime_message; garbage there is ignored.

Before, a payload whose id was not a UUID made the listener's read fail, and the
listener dropped its connection and reconnected (with backoff, then a catch-up read).
"""

from __future__ import annotations

import os

import asyncpg
from tests.conftest import Server, eventually

from pgrealtime import keys

GARBAGE = [
    "garbage:x",
    "",
    ":",
    "not-a-uuid",
    "'); DROP TABLE realtime.messages; --:x",
    "00000000-0000-0000-0000-00000000000g:x",
    "{00000000-0000-0000-0000-000000000000}:x",
]


async def test_garbage_notifications_do_not_disturb_the_listener(
    server: Server, db_url: str
) -> None:
    await server.create_channel("feed:*")
    watcher = await server.connect(server.token())
    await watcher.subscribe("feed:1")
    listener = server.app[keys.LISTENER]
    await eventually(listener.connected.is_set)
    role = f"nobody_{os.getpid()}"
    await server.db.execute(f"DROP ROLE IF EXISTS {role}")
    await server.db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        intruder = await asyncpg.connect(db_url.replace("postgres@", f"{role}@", 1))
        try:
            assert await intruder.fetchval("SELECT current_user") == role
            for payload in GARBAGE:
                await intruder.execute("SELECT pg_notify('realtime_message', $1)", payload)
        finally:
            await intruder.close()
        message_id = await server.db.fetchval("SELECT realtime.publish('feed:1', 'e', '{}')")
        message = await watcher.expect("message")
        assert message["messageId"] == str(message_id)
        # its NOTIFY came after the garbage: the garbage was handled by now
        assert listener.outages == 0 and listener.connected.is_set()
        assert listener.ignored == len(GARBAGE)
    finally:
        await server.db.execute(f"DROP ROLE IF EXISTS {role}")
