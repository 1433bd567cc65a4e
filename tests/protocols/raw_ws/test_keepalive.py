"""The process-wide heartbeat's rules, on plain objects (its sockets are tested live in
test_limits_heartbeat.py): ping the silent, cut the unanswered, spare the rest."""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import eventually

from pgrealtime.protocols.raw_ws.keepalive import SLICE, Keepalive

pytestmark = pytest.mark.pure


class Peer:
    def __init__(self, last_heard: float) -> None:
        self.last_heard = last_heard
        self.pinged_at = 0.0
        self.pings = 0
        self.was_cut = False

    def ping(self) -> None:
        self.pings += 1

    def cut(self) -> None:
        self.was_cut = True


async def test_silent_peers_are_pinged_then_cut_unless_they_answer() -> None:
    loop = asyncio.get_running_loop()
    keepalive = Keepalive(period=1.0)  # sweeps every 0.5 s: room to answer
    silent = [Peer(loop.time() - 10) for _ in range(2 * SLICE + 7)]  # several slices
    chatty = Peer(loop.time() + 3600)  # heard from all the time
    for peer in [*silent, chatty]:
        keepalive.add(peer)
    try:
        await eventually(lambda: all(p.pings == 1 for p in silent), timeout=5)
        answered = silent[::2]
        for peer in answered:  # a pong (or any frame) arrives
            peer.last_heard = loop.time()
        unanswered = silent[1::2]
        await eventually(lambda: all(p.was_cut for p in unanswered), timeout=5)
        assert not any(p.was_cut for p in answered)
        assert chatty.pings == 0 and not chatty.was_cut
        assert keepalive.connections == {*answered, chatty}
    finally:
        keepalive.close()


async def test_zero_period_means_no_heartbeat() -> None:
    keepalive = Keepalive(period=0)
    keepalive.add(Peer(0.0))
    assert not keepalive.connections
