"""What a resuming subscriber missed: the stored messages of one channel past `since`.

`since` is a channel position or the id of a message the client last saw. The
answer says whether it is complete (`recovered`): every position from `since` + 1 up
to the channel's position when the subscribe was authorized, none removed by
retention or DELETE /messages, and no more than the resume limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from pgrealtime.messages import SELECT_MESSAGES, StoredMessage, stored_message_from_row

POSITION_OF_ID_SQL = "SELECT position FROM realtime.messages WHERE id = $1 AND channel_name = $2"
NEWEST_AFTER_SQL = (
    SELECT_MESSAGES + " WHERE channel_name = $1 AND position > $2 ORDER BY position DESC LIMIT $3"
)


@dataclass(frozen=True, slots=True)
class History:
    messages: list[StoredMessage]  # in position order
    recovered: bool
    position: int  # the last position covered: live messages follow it


async def read_history(
    pool: asyncpg.Pool, channel: str, since: int | str, current: int, limit: int
) -> History:
    """The messages after `since` (at most `limit`, the newest ones), in order."""
    if isinstance(since, str):
        start = await pool.fetchval(POSITION_OF_ID_SQL, since, channel)
        if start is None:  # unknown here, or removed: the client must reload
            return History([], False, current)
    else:
        start = since
    if start >= current:
        # nothing missed (or a position this channel never reached: a reset database)
        return History([], start == current, current)
    rows = await pool.fetch(NEWEST_AFTER_SQL, channel, start, limit + 1)
    rows.reverse()
    truncated = len(rows) > limit
    if truncated:
        rows = rows[1:]
    messages = [stored_message_from_row(row) for row in rows]
    complete = (
        not truncated
        and bool(messages)
        and messages[0].position == start + 1
        and messages[-1].position - messages[0].position + 1 == len(messages)
        and messages[-1].position >= current
    )
    last = messages[-1].position if messages else start
    return History(messages, complete, max(last, start))
