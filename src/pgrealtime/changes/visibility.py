"""Who may see which change: table privileges at subscribe time, RLS per row per batch.

PostgreSQL decides, as the subscriber (allow-listed role + claims), so the
application's grants and policies are the only rules. Costs are bounded by batch,
not by audience: `visible_rows` is ONE round trip per table per batch for a whole
group of subscribers, and subscribers sharing (role, claims) are checked once.
Inside PostgreSQL (db/functions/visible_rows.sql) each such viewer costs one EXECUTE of a statement
prepared once per call, which the policy's own index can drive; here, routing is
grouped by filter and by viewer, so Python's work follows the deliveries rather than
changes x subscribers (1,000 users x 1,000 rows is a million pairs per batch).

Rules:
- Subscribe: `authorize_table` needs USAGE on the schema and SELECT on the table.
  Then `publish_table` adds the table to the (initially empty) publication, as the
  server's own role; a table without a primary key or replica identity is refused
  instead, because publishing it would break the application's UPDATE and DELETE.
- Every batch: `batch_readers` checks that privilege again, per role (one query for
  the batch, which also asks whether the batch's transactions are visible yet: see
  committed.py), so a REVOKE stops deliveries from the next batch on.
- Tables without row level security: that is all; every change goes to every
  subscriber whose filter matches.
- Tables with row level security: INSERT and UPDATE go to the subscribers who can
  SELECT the row, looked up by primary key when the batch is routed (shortly after
  the commit). A row deleted or changed out of a subscriber's sight in between is
  not sent to them: the check sees the table as it is now.
- So nothing older than the row as it is now was checked: on a table with row level
  security the `old` of an UPDATE or DELETE is cut to the key columns, null when the
  key is unknown (no primary key, REPLICA IDENTITY FULL), even under FULL, and row
  filters see only that (`payload.revealed`, applied before filtering).
- DELETE on a table with row level security cannot be checked (the row is gone):
  it goes to every subscriber allowed on the table, revealing the key only.
- A table with row level security but no primary key or replica identity index
  cannot be checked row by row: its INSERT/UPDATE changes go to nobody (logged).
- TRUNCATE carries no row, so it reveals nothing a subscriber allowed on the table
  may not know: it goes to every such subscriber, row level security or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from pgrealtime.auth import ROLES
from pgrealtime.changes.committed import SNAPSHOT, still_running
from pgrealtime.changes.filters import ChangeFilter, FilterError, matches, parse_filter
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.payload import build_payload, revealed
from pgrealtime.changes.tables import TableAllowList, unpublishable_schema

log = logging.getLogger(__name__)


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


class TableNotAllowed(SubscriptionDenied):
    """The server's operator did not list the table in `--changes-tables`: its changes
    are not published, whoever asks (so the refusal reveals nothing about the table)."""

    code = "TABLE_NOT_ALLOWED"


class TableBusy(SubscriptionDenied):
    """The table stayed locked (CREATE INDEX, VACUUM FULL...) while it was being added
    to the publication; subscribing again later works."""

    code = "TABLE_BUSY"


async def authorize_table(db: Database, role: str, claims: str, schema: str, table: str) -> str:
    """'ok' | 'no_table' | 'denied' for `role` with `claims` reading schema.table.
    'no_table' only for a caller who may read every table of the schema; a missing
    table is 'denied' for anyone else."""
    if role not in ROLES:
        return "denied"
    return await db.fetchval(
        "SELECT realtime.authorize_table($1, $2, $3, $4)", role, claims or "{}", schema, table
    )


# Which (schema, table, role) rows may read (their ordinal), and which of the given
# transactions (32-bit ids, per table) still run for a fresh snapshot, counting only
# those of tables some role may read: one round trip per batch for both.
_BATCH_READERS = f"""
WITH q AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(s, t, r, n)
), allowed AS (
  SELECT q.n, q.s, q.t FROM q
  JOIN pg_catalog.pg_roles ro ON ro.rolname = q.r
  JOIN pg_catalog.pg_namespace ns ON ns.nspname = q.s
  JOIN pg_catalog.pg_class c
    ON c.relnamespace = ns.oid AND c.relname = q.t AND c.relkind IN ('r', 'p')
  WHERE has_schema_privilege(ro.oid, ns.oid, 'USAGE')
    AND has_table_privilege(ro.oid, c.oid, 'SELECT')
), {SNAPSHOT}
SELECT n::int, NULL::bigint AS xid FROM allowed
UNION ALL
SELECT NULL, x.xid FROM snap, unnest($4::text[], $5::text[], $6::bigint[]) AS x(s, t, xid)
WHERE EXISTS (SELECT 1 FROM allowed a WHERE a.s = x.s AND a.t = x.t)
  AND {still_running("x.xid")}
"""


async def batch_readers(
    db: Database,
    wanted: dict[tuple[str, str], set[str]],
    checked: dict[tuple[str, str], set[int]] | None = None,
) -> tuple[dict[tuple[str, str], frozenset[str]], list[int]]:
    """For each (schema, table), those of its `wanted` roles that may read it NOW: USAGE
    on the schema and SELECT on the table, the subscribe check's rule. One query for
    all, so a REVOKE takes effect from the next batch on. Privileges belong to roles
    (never to claims) and roles come from the allow-list, so this is at most three
    rows per table. A table, schema or role that does not exist reads as not allowed.

    In the same round trip: which of the `checked` transactions (per table, the ones
    whose rows will be checked against row level security) still run for a fresh
    snapshot, among tables someone may read (see committed.py: wait for those)."""
    rows = [
        (schema, table, role)
        for (schema, table), roles in wanted.items()
        for role in sorted(roles)
        if role in ROLES
    ]
    if not rows:
        return {}, []
    xids = [(s, t, x) for (s, t), ids in (checked or {}).items() for x in sorted(ids)]
    found = await db.fetch(
        _BATCH_READERS,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [x[0] for x in xids],
        [x[1] for x in xids],
        [x[2] for x in xids],
    )
    readers: dict[tuple[str, str], set[str]] = {}
    running: list[int] = []
    for n, xid in found:
        if n is None:
            running.append(xid)
            continue
        schema, table, role = rows[n - 1]
        readers.setdefault((schema, table), set()).add(role)
    return {key: frozenset(roles) for key, roles in readers.items()}, running


async def table_readers(
    db: Database, wanted: dict[tuple[str, str], set[str]]
) -> dict[tuple[str, str], frozenset[str]]:
    """`batch_readers` without transactions to check: the roles that may read each table."""
    return (await batch_readers(db, wanted))[0]


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
    stayed locked. Catalogs, temporary and unlogged tables are TableNotPublishable,
    saying why (PostgreSQL cannot replicate them)."""
    name = f"{schema}.{table}"
    why = unpublishable_schema(schema)
    if why is not None:
        raise TableNotPublishable(f"changes of table {name} cannot be published: {why}")
    try:
        status = await db.fetchval(
            "SELECT realtime.publish_table($1, $2, $3)", publication, schema, table
        )
    except (asyncpg.InvalidParameterValueError, asyncpg.FeatureNotSupportedError) as exc:
        # ALTER PUBLICATION refused the table itself: unlogged, temporary, a catalog
        detail = getattr(exc, "detail", None) or str(exc)
        raise TableNotPublishable(
            f"changes of table {name} cannot be published: {detail.rstrip('.').lower()}"
        ) from None
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
    allowed: TableAllowList | None = None,
) -> TableSubscription:
    """Everything the subscribe handler does for a `db:<table>` channel: validate the
    filter, check the table is `allowed` (the operator's list; before any round trip)
    and the caller may read it, then (as the server's own role, with `db`, which must
    be the server's pool) make sure the table is in `publication` (None: leave the
    publication alone).

    Raises FilterError (code INVALID_FILTER) for a bad filter, else a SubscriptionDenied:
    itself (REALTIME_UNAUTHORIZED) when the table may not be read or does not exist,
    TableNotFound (TABLE_NOT_FOUND) when it does not exist and the caller may read every
    table of the schema, TableNotPublishable (TABLE_NOT_PUBLISHABLE) for a table without
    a primary key or replica identity, TableNotAllowed (TABLE_NOT_ALLOWED) for a table
    outside `allowed`, TableBusy (TABLE_BUSY). Every one has `code`; its message is for
    the client."""
    table = table_of_channel(channel)
    if table is None:
        raise SubscriptionDenied()
    flt = parse_filter(raw_filter)
    if flt.schema in excluded_schemas:
        raise FilterError(f"changes of schema {flt.schema!r} are not published")
    if allowed is not None and not allowed.allows(flt.schema, table):
        raise TableNotAllowed(
            f"changes of table {flt.schema}.{table} are not published by this server "
            f"(it is not in the server's --changes-tables list)"
        )
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
    SELECT now. One query, whatever the number of viewers and keys.

    Keys go as one flat text array, column by column (all values of the first key
    column, then the second...): PostgreSQL casts each column once to its type, and
    plain text arrays need no JSON on either side."""
    result: list[set[int]] = [set() for _ in viewers]
    if not viewers or not keys:
        return result
    flat = [key.get(column) for column in key_columns for key in keys]
    rows = await db.fetch(
        "SELECT viewer, row_index FROM realtime.visible_rows($1, $2, $3, $4::text[], $5, $6)",
        schema,
        table,
        list(key_columns),
        flat,
        [role for role, _ in viewers],
        [claims or "{}" for _, claims in viewers],
    )
    for row in rows:
        result[row[0] - 1].add(row[1] - 1)
    return result


@dataclass(slots=True)
class RoutedChange(Generic[S]):
    """One change, its payload, and who gets it. The server encodes the payload once
    and writes the same frame to every subscriber."""

    change: RowChange
    payload: dict[str, Any]
    subscribers: list[S]

    @property
    def channel(self) -> str:
        return f"db:{self.change.table}"


@dataclass(slots=True)
class RlsCounts:
    """Row visibility checks made (one per row and distinct viewer) and those that
    row level security answered with no: the figures behind the metrics."""

    checked: int = 0
    denied: int = 0


async def route_batch(
    db: Database,
    changes: Sequence[RowChange],
    candidates: Callable[[str, str], Sequence[S]],
    counts: RlsCounts | None = None,
) -> list[RoutedChange[S]]:
    """Decide, for a batch of committed changes, which subscribers get which change.

    `candidates(schema, table)` returns the server's subscribers of `db:<table>`
    (their filters are checked here). Deliveries come back in commit order; changes
    nobody gets are left out. One visibility query per table with row level security
    per batch.

    The work grows with the deliveries, not with changes x subscribers: subscribers
    are grouped by filter (each distinct filter is evaluated once per change) and, for
    row level security, by (role, claims) (each viewer is checked once per batch)."""
    # what may be shown of each change, decided once: filters see only that (a filter
    # on a column that is not sent must not tell anything about it)
    changes = [revealed(change) for change in changes]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, change in enumerate(changes):
        groups.setdefault((change.schema, change.table), []).append(i)

    chosen: dict[int, list[S]] = {}
    for (schema, table), indexes in groups.items():
        subscribers = candidates(schema, table)
        if not subscribers:
            continue
        by_filter = _group_by_filter(subscribers)
        to_check: dict[int, list[_FilterGroup[S]]] = {}  # change -> groups it matched
        for i in indexes:
            change = changes[i]
            matched = [g for g in by_filter if matches(g.filter, change)]
            if not matched:
                continue
            if change.rls and _has_checkable_row(change):
                to_check[i] = matched
                chosen[i] = []  # filled in by _apply_rls
                continue
            chosen[i] = _merge(matched)
        if to_check:
            await _apply_rls(db, schema, table, changes, to_check, chosen, counts)

    deliveries: list[RoutedChange[S]] = []
    for i in sorted(chosen):
        if chosen[i]:
            change = changes[i]
            payload = build_payload(change)  # `old` already cut by `revealed`
            deliveries.append(RoutedChange(change, payload, chosen[i]))
    return deliveries


@dataclass(slots=True)
class _FilterGroup(Generic[S]):
    """The subscribers of one table sharing one filter, with their positions in the
    candidates (to keep that order when several groups get the same change)."""

    filter: ChangeFilter
    members: list[tuple[int, S]]


def _group_by_filter(subscribers: Sequence[S]) -> list[_FilterGroup[S]]:
    groups: dict[ChangeFilter, _FilterGroup[S]] = {}
    for position, s in enumerate(subscribers):
        group = groups.get(s.filter)
        if group is None:
            group = groups[s.filter] = _FilterGroup(s.filter, [])
        group.members.append((position, s))
    return list(groups.values())


def _merge(matched: list[_FilterGroup[S]]) -> list[S]:
    """The subscribers of the matched groups, in candidate order."""
    if len(matched) == 1:
        return [s for _, s in matched[0].members]
    members = [m for g in matched for m in g.members]
    members.sort(key=lambda m: m[0])
    return [s for _, s in members]


def _has_checkable_row(change: RowChange) -> bool:
    """INSERT and UPDATE rows can be looked up as the subscriber; a DELETE's row is
    gone (its `old` is cut to the key instead) and a TRUNCATE has none."""
    return change.event in ("INSERT", "UPDATE")


async def _apply_rls(
    db: Database,
    schema: str,
    table: str,
    changes: Sequence[RowChange],
    to_check: dict[int, list[_FilterGroup[S]]],
    chosen: dict[int, list[S]],
    counts: RlsCounts | None = None,
) -> None:
    """Fill `chosen[i]` for the changes of `to_check` (each with the filter groups it
    matched) with those groups' subscribers who may SELECT the row. One query per key
    shape (normally one: a schema change mid-batch can make two).

    Each distinct (role, claims) among the matched groups is one viewer, asked about
    every key of the batch at once; then each row a viewer may see goes to its
    subscribers whose filter matched that change."""
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i in to_check:
        if changes[i].key:
            by_key.setdefault(tuple(changes[i].key), []).append(i)
        else:
            log.warning(
                "change not delivered: %s.%s has row level security but no primary key "
                "to check rows by",
                schema,
                table,
            )
    for key_columns, checkable in by_key.items():
        # viewer -> {filter: its subscribers with that filter (candidate position kept)}
        viewers: dict[tuple[str, str], dict[ChangeFilter, list[tuple[int, S]]]] = {}
        seen_groups: set[int] = set()
        for i in checkable:
            for group in to_check[i]:
                if id(group) in seen_groups:
                    continue
                seen_groups.add(id(group))
                for position, s in group.members:
                    by_viewer = viewers.setdefault((s.role, s.claims or "{}"), {})
                    by_viewer.setdefault(group.filter, []).append((position, s))
        viewer_list = list(viewers)
        visible = await visible_rows(
            db, schema, table, key_columns, [changes[i].key for i in checkable], viewer_list
        )
        if counts is not None:
            asked = len(checkable) * len(viewer_list)
            counts.checked += asked
            counts.denied += asked - sum(len(positions) for positions in visible)
        matched_filters = {i: {g.filter for g in to_check[i]} for i in checkable}
        picked: dict[int, list[tuple[int, S]]] = {}
        for viewer, positions in zip(viewer_list, visible, strict=True):
            for p in positions:
                i = checkable[p]
                wanted = matched_filters[i]
                for flt, members in viewers[viewer].items():
                    if flt in wanted:
                        picked.setdefault(i, []).extend(members)
        for i, members in picked.items():
            members.sort(key=lambda m: m[0])
            chosen[i] = [s for _, s in members]
