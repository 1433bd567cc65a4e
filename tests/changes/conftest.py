"""Fixtures for change-feed tests: feeds with a unique slot per test (slots are
cluster-wide), dropped at teardown before the test database is."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from pgrealtime.changes.feed import ChangeFeed
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.visibility import publish_table
from pgrealtime.config import FeedSettings

_slot_counter = itertools.count(1)


class Collector:
    """An on_batch handler that records every change, to await them in tests."""

    def __init__(self) -> None:
        self.changes: list[RowChange] = []
        self.batches: list[list[RowChange]] = []
        self._arrived = asyncio.Event()

    async def __call__(self, changes: list[RowChange]) -> None:
        self.batches.append(changes)
        self.changes.extend(changes)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[RowChange]:
        """Wait until at least `count` changes arrived in total; return all of them."""
        async with asyncio.timeout(timeout):
            while len(self.changes) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.changes

    async def quiet(self, seconds: float = 0.5) -> list[RowChange]:
        """Let anything in flight arrive, then return everything."""
        await asyncio.sleep(seconds)
        return self.changes


FeedFactory = Callable[..., ChangeFeed]


async def publish(db: asyncpg.Connection, *tables: str, schema: str = "public") -> None:
    """Add tables to the feed's publication, as a first subscribe does (the feed must
    have been started: it creates the publication)."""
    for table in tables:
        status = await publish_table(db, "pgrealtime", schema, table)
        assert status in ("added", "published"), status


@pytest.fixture
async def feed_factory(db_url: str) -> AsyncIterator[FeedFactory]:
    """Makes ChangeFeeds on this test's database sharing one unique slot name."""
    slot = f"pgrt_t_{os.getpid()}_{next(_slot_counter)}"
    feeds: list[ChangeFeed] = []

    def make(**kwargs: object) -> ChangeFeed:
        feed = ChangeFeed(db_url, FeedSettings(slot=slot), **kwargs)  # type: ignore[arg-type]
        feeds.append(feed)
        return feed

    yield make
    for feed in feeds:
        await feed.stop()
    conn = await asyncpg.connect(db_url)
    try:
        for _ in range(50):  # the walsender may take a moment to release the slot
            try:
                await conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = $1",
                    slot,
                )
                break
            except asyncpg.ObjectInUseError:
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


@pytest.fixture
async def started(
    feed_factory: FeedFactory,
) -> AsyncIterator[tuple[ChangeFeed, Collector]]:
    """A running feed with a Collector as its on_batch."""
    collector = Collector()
    feed = feed_factory(on_batch=collector)
    await feed.start()
    assert feed.status()["enabled"], feed.status()
    yield feed, collector
