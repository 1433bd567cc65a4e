"""Fixtures for webhook tests: receivers, a pool on the test database, and workers
that are always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from pgrealtime.config import WebhookSettings
from pgrealtime.webhooks import WebhookWorker

from .helpers import FAST, Receiver, settings


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return await receiver.start()

    yield make
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture
async def workers(
    pool: asyncpg.Pool,
) -> AsyncIterator[Callable[..., Awaitable[WebhookWorker]]]:
    """Start workers (on the test pool unless one is given); all stopped at the end."""
    started: list[WebhookWorker] = []

    async def make(
        worker_pool: asyncpg.Pool | None = None, options: dict[str, Any] | None = None, **kw: Any
    ) -> WebhookWorker:
        worker = WebhookWorker(
            worker_pool or pool, WebhookSettings.of(settings(**kw)), **{**FAST, **(options or {})}
        )
        started.append(worker)
        await worker.start()
        return worker

    yield make
    for worker in started:
        await worker.stop(grace=0)
