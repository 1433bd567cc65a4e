"""The change relay: decoded changes from the slot holder to every other process.

Only one process can read a replication slot. Before, that process alone delivered
`db:` changes and a subscriber on any other process got `subscribed` and then nothing.
Now the holder (elected by changes/cluster.py) writes each batch it delivers to
`realtime.change_relay` (one row, NOTIFY `realtime_change_relay` with its id) and every
process reads the rows past the last id it saw, then routes them to its own
subscribers with their own row level security checks, exactly as the holder does.

Why a table and not the NOTIFY payload: a batch is often larger than NOTIFY's 8000
bytes, and a process whose connection dropped reads what it missed from the table
when it is back. The holder inserts one row per batch (one writer, so ids grow in
commit order) and deletes rows older than `keep_seconds`.

The row's bytes are the batch as JSON (orjson writes the RowChange dataclasses); a
column orjson will not write is left out of that change (counted by the caller's
`on_left_out`), never the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import orjson

from pgrealtime.changes.model import RowChange
from pgrealtime.db.dedicated import close_quietly, wake_or_lost
from pgrealtime.db.errors import transient

log = logging.getLogger(__name__)

CHANNEL = "realtime_change_relay"
INSERT_SQL = (
    "WITH r AS (INSERT INTO realtime.change_relay (origin, end_lsn, changes)"
    " VALUES ($1, $2, $3) RETURNING id)"
    f" SELECT id, pg_notify('{CHANNEL}', id::text) FROM r"
)
# With a broker the row travels on the bus instead of a NOTIFY.
INSERT_QUIET_SQL = (
    "INSERT INTO realtime.change_relay (origin, end_lsn, changes) VALUES ($1, $2, $3) RETURNING id"
)
# With a broker, how often a process looks at the table anyway (a bus message that was
# lost, with no later one to show the gap).
BUS_POLL_SECONDS = 2.0
# Rows past the last one seen, a page at a time; the changes only when someone here
# subscribes to a table (otherwise only the positions move on).
READ_SQL = (
    "SELECT id, origin, end_lsn, CASE WHEN $2 THEN changes END AS changes"
    " FROM realtime.change_relay WHERE id > $1 ORDER BY id LIMIT 100"
)
PRUNE_SQL = "DELETE FROM realtime.change_relay WHERE created_at < now() - make_interval(secs => $1)"
PRUNE_INTERVAL_SECONDS = 30.0
RETRY_SECONDS = 0.5
# A row whose delivery fails this many times for a reason that is not the database's
# (a bug, a change that cannot be routed) is skipped, logged; transient errors retry.
MAX_ROW_FAILURES = 3

Deliver = Callable[[list[RowChange]], Awaitable[None]]


def encode_changes(changes: list[RowChange], on_left_out: Callable[[str], None]) -> bytes:
    """The batch as JSON; columns orjson will not write are left out (reported)."""
    try:
        return orjson.dumps(changes)
    except (orjson.JSONEncodeError, TypeError):
        pass
    parts = []
    for change in changes:
        try:
            parts.append(orjson.dumps(change))
            continue
        except (orjson.JSONEncodeError, TypeError):
            pass
        fields = {name: getattr(change, name) for name in RowChange.__slots__}
        for side in ("new", "old"):
            row = fields[side]
            if isinstance(row, dict):
                kept = {}
                for column, value in row.items():
                    try:
                        orjson.dumps(value)
                    except (orjson.JSONEncodeError, TypeError):
                        on_left_out(f"{change.schema}.{change.table}.{column}")
                        continue
                    kept[column] = value
                fields[side] = kept
        parts.append(orjson.dumps(fields))
    return b"[" + b",".join(parts) + b"]"


def decode_changes(data: bytes) -> list[RowChange]:
    return [RowChange(**fields) for fields in orjson.loads(data)]


# A relay row on a bus: (id, origin, end_lsn, changes)
_envelope = msgspec.msgpack.Encoder()
_unwrap = msgspec.msgpack.Decoder(tuple[int, str, int, bytes])


class RelayWriter:
    """The slot holder's side: one row per delivered batch, and pruning."""

    def __init__(self, pool: asyncpg.Pool, origin: str, keep_seconds: float) -> None:
        self.pool = pool
        self.origin = origin
        self.keep_seconds = keep_seconds
        self._pruned_at = 0.0
        self.left_out = 0  # columns left out of relayed changes (not encodable)
        # a bus's send (NatsBus.stream): the row goes there, no NOTIFY
        self.send: Callable[[bytes], None] | None = None

    async def write(self, changes: list[RowChange]) -> None:
        if not changes:
            return
        body = encode_changes(changes, self._left_out)
        end_lsn = changes[-1].lsn
        if self.send is None:
            await self.pool.execute(INSERT_SQL, self.origin, end_lsn, body)
        else:
            row_id = await self.pool.fetchval(INSERT_QUIET_SQL, self.origin, end_lsn, body)
            self.send(_envelope.encode((row_id, self.origin, end_lsn, body)))
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at >= PRUNE_INTERVAL_SECONDS:
            self._pruned_at = now
            await self.pool.execute(PRUNE_SQL, float(self.keep_seconds))

    def _left_out(self, column: str) -> None:
        self.left_out += 1
        log.warning("change relay: column %s left out: not encodable", column)


class RelayReader:
    """Every process's side: reads the rows other processes wrote, in id order, and
    hands their changes to `deliver` (which drops what it already delivered).

    `connected` is set while this process hears the relay: the cluster feed tells a
    `db:` subscriber `subscribed` only then. Reading starts at the newest row when the
    process starts; after a lost connection it resumes from the last id it saw.
    """

    def __init__(
        self,
        url: str,
        origin: str,
        deliver: Deliver,
        wanted: Callable[[], bool],
        skip_to: Callable[[int], None],
    ) -> None:
        self.url = url
        self.origin = origin
        self.deliver = deliver
        self.wanted = wanted  # does anyone here subscribe to a table now?
        self.skip_to = skip_to  # nobody here wanted a batch: its end LSN counts as seen
        self.connected = asyncio.Event()
        self.last_id: int | None = None
        self.rows = 0  # rows read from other processes
        self.skipped_rows = 0  # rows given up after MAX_ROW_FAILURES
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # everything notified so far has been read
        self._offers: deque[dict[str, Any]] = deque()  # rows that came over a bus
        self._read_table = True  # read the table at the next wake (else only offers)
        self.poll_seconds: float | None = None  # with a bus: BUS_POLL_SECONDS
        self.offered = 0  # rows taken from the bus without reading the table

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    async def read_up_to(self, newest: int, within: float) -> bool:
        """Wait until every row up to id `newest` has been read (a new slot holder does
        this first, so what its predecessor relayed is delivered before it reads the
        slot itself). False if that did not happen within `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        self._wake.set()
        while self.last_id is None or self.last_id < newest:
            if loop.time() >= deadline:
                return False
            self._idle.clear()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        return True

    def _on_notify(self, *_args: object) -> None:
        self._read_table = True
        self._wake.set()

    def offer(self, data: bytes) -> None:
        """A relay row that came over a bus: delivered without reading the table if it
        is the next one; otherwise (a gap: a bus message was lost) the table is read."""
        row_id, origin, end_lsn, changes = _unwrap.decode(data)
        self._offers.append(
            {"id": row_id, "origin": origin, "end_lsn": end_lsn, "changes": changes}
        )
        self._wake.set()

    def catch_up(self) -> None:
        """Read the table now (the bus was cut off: rows may have been missed)."""
        self._on_notify()

    async def _run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if self.last_id is None:
                    self.last_id = await conn.fetchval(
                        "SELECT coalesce(max(id), 0) FROM realtime.change_relay"
                    )
                self._on_notify()  # read what came while the connection was down
                self.connected.set()
                await self._read_loop(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change relay: connection lost: %s", exc)
            finally:
                self.connected.clear()
                if conn is not None:
                    await close_quietly(conn)
            await asyncio.sleep(RETRY_SECONDS)

    async def _read_loop(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            self._idle.set()
            # not woken within the poll: a lost bus message with nothing after it
            if not await wake_or_lost(self._wake, lost, self.poll_seconds):
                self._read_table = True
            await self._take_offers()
            if not self._read_table:
                continue
            self._read_table = False
            while not lost.is_set():
                rows = await conn.fetch(READ_SQL, self.last_id, self.wanted())
                for row in rows:
                    await self._deliver_row(row)
                    self.last_id = row["id"]
                if len(rows) < 100:
                    break
        raise ConnectionError("change relay connection terminated")

    async def _take_offers(self) -> None:
        """Rows from the bus, in order, while each is the next one."""
        while self._offers and self.last_id is not None:
            row = self._offers.popleft()
            if row["id"] <= self.last_id:
                continue  # read from the table already
            if row["id"] != self.last_id + 1:
                self._offers.clear()  # a gap: the table has them all
                self._read_table = True
                return
            if not self.wanted():
                row["changes"] = None
            await self._deliver_row(row)
            self.last_id = row["id"]
            self.offered += 1

    async def _deliver_row(self, row: Any) -> None:
        if row["origin"] == self.origin:
            return  # this process read these itself and delivered them then
        self.rows += 1
        if row["changes"] is None:
            self.skip_to(row["end_lsn"])
            return
        failures = 0
        while True:
            try:
                await self.deliver(decode_changes(row["changes"]))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not transient(exc):
                    failures += 1
                    if failures >= MAX_ROW_FAILURES:
                        self.skipped_rows += 1
                        log.error(
                            "change relay: skipped relayed batch %d after %d failures: %s",
                            row["id"],
                            failures,
                            exc,
                            exc_info=True,
                        )
                        return
                await asyncio.sleep(RETRY_SECONDS)
