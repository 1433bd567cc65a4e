"""Who may see which change: table privileges at subscribe time, RLS per row per batch.

PostgreSQL decides, as the subscriber (allow-listed role + claims), so the
application's grants and policies are the only rules. Costs are bounded by batch,
not by audience: `visible_rows` is ONE round trip per table per batch for a whole
group of subscribers, and subscribers sharing (role, claims) are checked once.

Rules:
- Subscribe: `authorize_table` needs USAGE on the schema and SELECT on the table.
  Then `publish_table` adds the table to the (initially empty) publication, as the
  server's own role; a table without a primary key or replica identity is refused
  instead, because publishing it would break the application's UPDATE and DELETE.
- Tables without row level security: that check is all; every change goes to
  every subscriber whose filter matches.
- Tables with row level security: INSERT and UPDATE go to the subscribers who can
  SELECT the row, looked up by primary key when the batch is routed (shortly after
  the commit). A row deleted or changed out of a subscriber's sight in between is
  not sent to them: the check sees the table as it is now.
- DELETE on a table with row level security cannot be checked (the row is gone):
  it goes to every subscriber allowed on the table, with `old` cut down to the key
  columns so nothing but the key is revealed.
- A table with row level security but no primary key or replica identity index
  cannot be checked row by row: its INSERT/UPDATE changes go to nobody (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson

from pgrealtime.changes.filters import ChangeFilter, FilterError, matches, parse_filter
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.payload import build_payload

log = logging.getLogger(__name__)

ALLOWED_ROLES = frozenset({"anon", "authenticated", "project_admin"})


class Database(Protocol):
    """An asyncpg Pool or Connection: anything with `fetch` and `fetchval`."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


class Subscriber(Protocol):
    """What routing needs from the server's subscription object."""

    @property
    def role(self) -> str: ...

    @property
    def claims(self) -> str: ...  # the caller's JWT claims as JSON text

    @property
    def filter(self) -> ChangeFilter: ...


S = TypeVar("S", bound=Subscriber)


def table_of_channel(channel: str) -> str | None:
    """'db:posts' -> 'posts'; None when the name is not a `db:` channel."""
    if not channel.startswith("db:"):
        return None
    table = channel[3:]
    return table if table and len(table) <= 63 else None


@dataclass(frozen=True, slots=True)
class TableSubscription:
    """The outcome of a successful `authorize_subscription`."""

    schema: str
    table: str
    filter: ChangeFilter


DENIED_MESSAGE = "Channel not found or not accessible"


class SubscriptionDenied(PermissionError):
    """The caller may not subscribe. Base class of every refusal of a `db:` channel
    that is not about the filter; `code` and the message are for the error frame.

    Raised as such when there is no such table or the caller may not SELECT it: one
    message for both, so a refusal does not reveal which tables exist."""

    code = "REALTIME_UNAUTHORIZED"

    def __init__(self, message: str = DENIED_MESSAGE) -> None:
        super().__init__(message)


class TableNotFound(SubscriptionDenied):
    """No such table, told only to a caller who may read every table of the schema
    (so telling it apart from "denied" reveals nothing); others get SubscriptionDenied."""

    code = "TABLE_NOT_FOUND"


class TableNotPublishable(SubscriptionDenied):
    """The caller may read the table, but its changes cannot be published: it has no
    primary key or replica identity (publishing it would make PostgreSQL refuse the
    application's UPDATE and DELETE on it), or the server's database user may not add
    it to the publication. The message says how to fix it."""

    code = "TABLE_NOT_PUBLISHABLE"


class TableBusy(SubscriptionDenied):
    """The table stayed locked (CREATE INDEX, VACUUM FULL...) while it was being added
    to the publication; subscribing again later works."""

    code = "TABLE_BUSY"


async def authorize_table(db: Database, role: str, claims: str, schema: str, table: str) -> str:
    """'ok' | 'no_table' | 'denied' for `role` with `claims` reading schema.table.
    'no_table' only for a caller who may read every table of the schema; a missing
    table is 'denied' for anyone else."""
    if role not in ALLOWED_ROLES:
        return "denied"
    return await db.fetchval(
        "SELECT realtime.authorize_table($1, $2, $3, $4)", role, claims or "{}", schema, table
    )


def _qualified(schema: str, table: str) -> str:
    return ".".join('"' + n.replace('"', '""') + '"' for n in (schema, table))


async def publish_table(db: Database, publication: str, schema: str, table: str) -> str:
    """Make sure the changes of schema.table are in `publication`:
    `ALTER PUBLICATION ... ADD TABLE ...` unless it is there already (idempotent, safe
    against a concurrent add). `db` must be the server's own pool or connection, never
    one running as a caller's role: adding a table needs its owner or a superuser.

    Returns 'added', 'published' (it already was) or 'no_publication' (the change feed
    is off: nothing to add to). Raises TableNotPublishable for a table without a
    primary key or replica identity (refused before anything is changed) or that the
    server's user may not publish, TableNotFound if it does not exist, TableBusy if it
    stayed locked."""
    status = await db.fetchval(
        "SELECT realtime.publish_table($1, $2, $3)", publication, schema, table
    )
    name = f"{schema}.{table}"
    if status in ("added", "published", "no_publication"):
        if status == "added":
            log.info("added table %s to publication %s", name, publication)
        return str(status)
    if status == "no_identity":
        raise TableNotPublishable(
            f"changes of table {name} cannot be published: it has no primary key (or "
            f"replica identity), and PostgreSQL would then refuse UPDATE and DELETE on it. "
            f"Give the table a primary key, or run `pgrealtime replica-identity {name} "
            f"--full` (or the REST route, or ALTER TABLE {_qualified(schema, table)} "
            f"REPLICA IDENTITY FULL), then subscribe again"
        )
    if status == "not_owner":
        log.warning(
            "cannot add table %s to publication %s: the server's database user must own "
            "the table and the publication, or be a superuser",
            name,
            publication,
        )
        raise TableNotPublishable(
            f"changes of table {name} cannot be published: the realtime server's database "
            f"user may not add it to publication {publication} (that takes the table's "
            f"owner or a superuser). The table's owner can run: ALTER PUBLICATION "
            f'"{publication}" ADD TABLE {_qualified(schema, table)}'
        )
    if status == "busy":
        raise TableBusy(f"table {name} is locked by another operation; subscribe again later")
    raise TableNotFound(f"table {name} does not exist")  # 'no_table': dropped meanwhile


async def authorize_subscription(
    db: Database,
    role: str,
    claims: str,
    channel: str,
    raw_filter: Any,
    *,
    publication: str | None = "pgrealtime",
    excluded_schemas: frozenset[str] = frozenset({"realtime"}),
) -> TableSubscription:
    """Everything the subscribe handler does for a `db:<table>` channel: validate the
    filter, check the caller may read the table, then (as the server's own role, with
    `db`, which must be the server's pool) make sure the table is in `publication`
    (None: leave the publication alone).

    Raises FilterError (code INVALID_FILTER) for a bad filter, else a SubscriptionDenied:
    itself (REALTIME_UNAUTHORIZED) when the table may not be read or does not exist,
    TableNotFound (TABLE_NOT_FOUND) when it does not exist and the caller may read every
    table of the schema, TableNotPublishable (TABLE_NOT_PUBLISHABLE) for a table without
    a primary key or replica identity, TableBusy (TABLE_BUSY). Every one has `code`;
    its message is for the client."""
    table = table_of_channel(channel)
    if table is None:
        raise SubscriptionDenied()
    flt = parse_filter(raw_filter)
    if flt.schema in excluded_schemas:
        raise FilterError(f"changes of schema {flt.schema!r} are not published")
    status = await authorize_table(db, role, claims, flt.schema, table)
    if status == "no_table":
        raise TableNotFound(f"table {flt.schema}.{table} does not exist")
    if status != "ok":
        raise SubscriptionDenied()
    if publication is not None:
        # a separate statement: authorize_table has reset the role to the server's own
        await publish_table(db, publication, flt.schema, table)
    return TableSubscription(flt.schema, table, flt)


async def visible_rows(
    db: Database,
    schema: str,
    table: str,
    key_columns: Sequence[str],
    keys: Sequence[dict[str, str | None]],
    viewers: Sequence[tuple[str, str]],
) -> list[set[int]]:
    """For each (role, claims) viewer, the 0-based indexes of `keys` whose rows it may
    SELECT now. One query, whatever the number of viewers and keys."""
    result: list[set[int]] = [set() for _ in viewers]
    if not viewers or not keys:
        return result
    rows = await db.fetch(
        # keys go as text: a pool with a jsonb codec would turn a JSON string into a scalar
        "SELECT viewer, row_index FROM realtime.visible_rows($1, $2, $3, $4::text::jsonb, $5, $6)",
        schema,
        table,
        list(key_columns),
        orjson.dumps(list(keys)).decode(),
        [role for role, _ in viewers],
        [claims or "{}" for _, claims in viewers],
    )
    for row in rows:
        result[row["viewer"] - 1].add(row["row_index"] - 1)
    return result


@dataclass(slots=True)
class Delivery(Generic[S]):
    """One change, its payload, and who gets it. The server encodes the payload once
    and writes the same frame to every subscriber."""

    change: RowChange
    payload: dict[str, Any]
    subscribers: list[S]

    @property
    def channel(self) -> str:
        return f"db:{self.change.table}"


async def route_batch(
    db: Database,
    changes: Sequence[RowChange],
    candidates: Callable[[str, str], Sequence[S]],
) -> list[Delivery[S]]:
    """Decide, for a batch of committed changes, which subscribers get which change.

    `candidates(schema, table)` returns the server's subscribers of `db:<table>`
    (their filters are checked here). Deliveries come back in commit order; changes
    nobody gets are left out. One visibility query per table with row level security
    per batch."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, change in enumerate(changes):
        groups.setdefault((change.schema, change.table), []).append(i)

    chosen: dict[int, list[S]] = {}
    for (schema, table), indexes in groups.items():
        subscribers = candidates(schema, table)
        if not subscribers:
            continue
        for i in indexes:
            matched = [s for s in subscribers if matches(s.filter, changes[i])]
            if matched:
                chosen[i] = matched
        to_check = [i for i in indexes if i in chosen and changes[i].rls]
        to_check = [i for i in to_check if changes[i].event != "DELETE"]
        if to_check:
            await _apply_rls(db, schema, table, changes, to_check, chosen)

    deliveries: list[Delivery[S]] = []
    for i in sorted(chosen):
        if chosen[i]:
            change = changes[i]
            payload = build_payload(change, key_only_old=change.rls and change.event == "DELETE")
            deliveries.append(Delivery(change, payload, chosen[i]))
    return deliveries


async def _apply_rls(
    db: Database,
    schema: str,
    table: str,
    changes: Sequence[RowChange],
    indexes: list[int],
    chosen: dict[int, list[S]],
) -> None:
    """Narrow `chosen[i]` for the given changes to subscribers who may SELECT the row.
    One query per key shape (normally one: a schema change mid-batch can make two)."""
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i in indexes:
        if changes[i].key:
            by_key.setdefault(tuple(changes[i].key), []).append(i)
        else:
            log.warning(
                "change not delivered: %s.%s has row level security but no primary key "
                "to check rows by",
                schema,
                table,
            )
            chosen[i] = []
    for key_columns, checkable in by_key.items():
        viewer_index: dict[tuple[str, str], int] = {}
        for i in checkable:
            for s in chosen[i]:
                viewer_index.setdefault((s.role, s.claims or "{}"), len(viewer_index))
        visible = await visible_rows(
            db, schema, table, key_columns, [changes[i].key for i in checkable], list(viewer_index)
        )
        for position, i in enumerate(checkable):
            chosen[i] = [
                s
                for s in chosen[i]
                if position in visible[viewer_index[(s.role, s.claims or "{}")]]
            ]
