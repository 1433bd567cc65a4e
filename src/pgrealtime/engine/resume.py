"""What a resuming subscriber missed: the stored messages of one channel past `since`.

`since` is a channel position or the id of a message the client last saw. The
answer says whether it is complete (`recovered`): every position from `since` + 1 up
to the channel's position when the subscribe was authorized, none removed by
retention or DELETE /messages, and within the resume limits (a count and a size).

A resume is planned first from positions and sizes only (no payload leaves the
database), then read in pages: a resume of 10,000 messages of 1 MiB is never in
memory at once, and the caller sends each page when the connection has room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from pgrealtime.engine.messages import SELECT_MESSAGES, StoredMessage, stored_message_from_row

POSITION_OF_ID_SQL = "SELECT position FROM realtime.messages WHERE id = $1 AND channel_name = $2"
# Newest first: what the resume keeps when it cannot keep everything.
SIZES_AFTER_SQL = (
    "SELECT position, octet_length(payload::text) + octet_length(event_name) AS size"
    " FROM realtime.messages WHERE channel_name = $1 AND position > $2"
    " ORDER BY position DESC LIMIT $3"
)
# Oldest first, within a range: the messages a resume dropped while it read history.
SIZES_BETWEEN_SQL = (
    "SELECT position, octet_length(payload::text) + octet_length(event_name) AS size"
    " FROM realtime.messages WHERE channel_name = $1 AND position > $2 AND position <= $3"
    " ORDER BY position LIMIT $4"
)
PAGE_SQL = (
    SELECT_MESSAGES + " WHERE channel_name = $1 AND position >= $2 AND position <= $3"
    " ORDER BY position"
)
# A `message` frame besides its payload and event: ids, names, timestamp, header.
FRAME_OVERHEAD = 512
PAGE_ROWS = 500
RANGE_ROWS = 10 * PAGE_ROWS  # sizes read at once by plan_range


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    pages: list[tuple[int, int]]  # (first, last) positions of each page, in order
    count: int  # messages in the pages
    recovered: bool
    position: int  # the last position covered: live messages follow it


async def plan_history(
    pool: asyncpg.Pool,
    channel: str,
    since: int | str,
    current: int,
    limit: int,
    max_bytes: int,
    page_bytes: int,
    wait_seconds: float | None = None,
) -> HistoryPlan:
    """The newest messages after `since` that fit in `limit` messages and about
    `max_bytes` of frames, cut into pages of at most PAGE_ROWS rows and `page_bytes`."""
    if isinstance(since, str):
        found = await _fetch(pool, wait_seconds, POSITION_OF_ID_SQL, since, channel)
        start = found[0]["position"] if found else None
        if start is None:  # unknown here, or removed: the client must reload
            return HistoryPlan([], 0, False, current)
    else:
        start = since
    if start >= current:
        # nothing missed (or a position this channel never reached: a reset database)
        return HistoryPlan([], 0, start == current, current)
    rows = await _fetch(pool, wait_seconds, SIZES_AFTER_SQL, channel, start, limit + 1)
    kept: list[tuple[int, int]] = []  # (position, size), newest first
    total = 0
    for row in rows[:limit]:
        size = row["size"] + len(channel) + FRAME_OVERHEAD
        if total + size > max_bytes:
            break
        total += size
        kept.append((row["position"], size))
    kept.reverse()
    complete = (
        len(kept) == len(rows)
        and bool(kept)
        and kept[0][0] == start + 1
        and kept[-1][0] - kept[0][0] + 1 == len(kept)
        and kept[-1][0] >= current
    )
    newest = rows[0]["position"] if rows else start
    return HistoryPlan(_pages(kept, page_bytes), len(kept), complete, max(newest, start))


async def plan_range(
    pool: asyncpg.Pool,
    channel: str,
    after: int,
    upto: int,
    page_bytes: int,
    wait_seconds: float | None = None,
) -> list[tuple[int, int]]:
    """Pages of the stored messages past `after` up to `upto`, oldest first, no limit
    but the range: at most RANGE_ROWS of them, so a long range is planned (and its
    sizes held) a piece at a time; the caller asks again past the last page. Empty
    when nothing is stored in the range (any more)."""
    rows = await _fetch(pool, wait_seconds, SIZES_BETWEEN_SQL, channel, after, upto, RANGE_ROWS)
    extra = len(channel) + FRAME_OVERHEAD
    return _pages([(row["position"], row["size"] + extra) for row in rows], page_bytes)


def _pages(kept: list[tuple[int, int]], page_bytes: int) -> list[tuple[int, int]]:
    pages: list[tuple[int, int]] = []
    first = last = rows = size = 0
    for position, frame_size in kept:
        if rows and (rows >= PAGE_ROWS or size + frame_size > page_bytes):
            pages.append((first, last))
            rows = size = 0
        if not rows:
            first = position
        rows += 1
        size += frame_size
        last = position
    if rows:
        pages.append((first, last))
    return pages


async def read_page(
    pool: asyncpg.Pool, channel: str, first: int, last: int, wait_seconds: float | None = None
) -> list[StoredMessage]:
    """One page of a plan, in position order (a message removed since is skipped)."""
    rows = await _fetch(pool, wait_seconds, PAGE_SQL, channel, first, last)
    return [stored_message_from_row(row) for row in rows]


async def _fetch(pool: asyncpg.Pool, wait_seconds: float | None, sql: str, *args: Any) -> list:
    """`sql`'s rows, or TimeoutError (a db_errors.UNAVAILABLE) after `wait_seconds`
    of waiting for a connection or for the answer (instead of the pool's 30 s command
    timeout: a resume holds a history-read slot and its client's frames meanwhile). A
    connection whose statement timed out is closed rather than cancelled and reused:
    a database that stopped answering would not answer a cancel request either."""
    async with pool.acquire(timeout=wait_seconds) as conn:
        try:
            return await conn.fetch(sql, *args, timeout=wait_seconds)
        except TimeoutError:
            conn.terminate()
            raise
