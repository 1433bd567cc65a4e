"""Figures only PostgreSQL knows, asked once per scrape (not on any message's path).

A collector cannot await, so the /metrics handler awaits `refresh` first and the
collector reads what it found. The webhook queue is the table every server process
shares: its depth is the same whichever process is scraped. The query walks only the
pending rows, through the partial index the claim uses; it is bounded by a timeout so
a slow or unreachable database makes the scrape say `pgrealtime_database_up 0`
instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pgrealtime.db import errors as db_errors

log = logging.getLogger(__name__)

REFRESH_TIMEOUT_SECONDS = 2.0  # like /health's check

WEBHOOK_QUEUE_SQL = """
SELECT count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
       count(*) FILTER (WHERE next_attempt_at > now()) AS waiting,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
FROM realtime.webhook_deliveries WHERE status = 'pending'
"""


class DatabaseFigures:
    """The last answers: `up` (None before the first scrape) and `webhook_queue`
    (due, waiting, oldest pending age in seconds; None when it could not be read)."""

    def __init__(self, timeout: float = REFRESH_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self.up: bool | None = None
        self.webhook_queue: tuple[int, int, float] | None = None

    async def refresh(self, pool: Any) -> None:
        try:
            row = await asyncio.wait_for(pool.fetchrow(WEBHOOK_QUEUE_SQL), self.timeout)
        except (TimeoutError, *db_errors.FAILED) as exc:
            log.warning("metrics: database figures not read: %s", type(exc).__name__)
            self.up = False
            self.webhook_queue = None
            return
        self.up = True
        self.webhook_queue = (row["due"], row["waiting"], row["oldest"])
