"""Presence through the client (on a server with presence; skipped on one without):
the snapshot, join/update/leave changes and callbacks, the state restored after a
reconnect."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Server

from pgrealtime.client import Backoff, Presence, connect

FAST = Backoff(initial=0.02, maximum=0.2)


async def test_presence_snapshot_changes_and_state_after_reconnect(server: Server) -> None:
    await server.create_channel("room:*")
    changes: list[Presence] = []
    async with connect(server.base, token=server.token()) as bob:
        bob_sub = await bob.subscribe("room:1", on_presence=changes.append)
        if not bob_sub.has_presence:
            pytest.skip("this server has no presence")
        assert list(bob_sub.presence) == [bob.user_id]
        async with connect(server.base, token=server.token(), backoff=FAST) as alice:
            alice_sub = await alice.subscribe("room:1")
            assert set(alice_sub.presence) == {alice.user_id, bob.user_id}
            await alice_sub.set_presence({"status": "typing"})

            async def seen(count: int) -> None:
                while len(changes) < count:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(seen(2), 5)
            assert [(c.event, c.member["presenceId"]) for c in changes] == [
                ("join", alice.user_id),
                ("update", alice.user_id),
            ]
            assert bob_sub.presence[alice.user_id]["state"] == {"status": "typing"}

            alice._ws._writer.transport.abort()  # alice drops; she comes back, state too
            await asyncio.wait_for(
                _until(lambda: alice.reconnects == 1 and alice.connected), timeout=10
            )
            await asyncio.sleep(0.3)
            assert bob_sub.presence[alice.user_id]["state"] == {"status": "typing"}
            assert alice_sub.presence[alice.user_id]["state"] == {"status": "typing"}
        await asyncio.wait_for(_until(lambda: alice.user_id not in bob_sub.presence), 10)
        assert changes[-1].event == "leave"


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)
