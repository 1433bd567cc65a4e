"""`pgrealtime replica-identity <schema>.<table> [--full|--default]`: show or set a
table's replica identity (the name rules are changes/admin's, shared with REST)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from pgrealtime.changes.admin import BadTableName, parse_table_name
from pgrealtime.changes.feed import (
    ReplicaIdentityRequired,
    replica_identity,
    set_replica_identity_full,
)
from pgrealtime.cli.database import database
from pgrealtime.config import add_connection_flags, settings_from_args
from pgrealtime.db import errors as db_errors

# exit codes of the command
EXIT_OK = 0
EXIT_FAILED = 1  # the database refused or could not be reached
EXIT_USAGE = 2  # bad name or no such table (argparse uses 2 for usage errors too)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `pgrealtime replica-identity` (same database flags as `migrate`)."""
    parser = commands.add_parser(
        "replica-identity",
        help="show or set REPLICA IDENTITY FULL/DEFAULT of a table",
        description="Show a table's replica identity, or set it. FULL lets a table "
        "without a primary key be subscribed to (db:<table>) and makes UPDATE and DELETE "
        "changes carry the whole old row, at the cost of more WAL. A partitioned table's "
        "partitions are changed with it. Needs the table's owner (or a superuser).",
    )
    parser.add_argument(
        "table", metavar="SCHEMA.TABLE", help="e.g. public.posts (case-sensitive; no dot: public)"
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--full", dest="identity", action="store_const", const="full",
                        help="REPLICA IDENTITY FULL")  # fmt: skip
    choice.add_argument("--default", dest="identity", action="store_const", const="default",
                        help="REPLICA IDENTITY DEFAULT (the primary key)")  # fmt: skip
    add_connection_flags(parser)
    parser.set_defaults(func=cmd_replica_identity)


async def run(url: str, schema: str, table: str, identity: str | None) -> str:
    """Set (or, with identity None, read) the identity; returns the line to print."""
    conn = await asyncpg.connect(url)
    try:
        if identity is None:
            current = await replica_identity(conn, schema, table)
            return f"{schema}.{table}: replica identity {current}"
        before = await set_replica_identity_full(conn, schema, table, full=identity == "full")
        return f"{schema}.{table}: replica identity {identity} (was {before})"
    finally:
        await conn.close()


def cmd_replica_identity(args: argparse.Namespace) -> int:
    try:
        schema, table = parse_table_name(args.table)
    except BadTableName as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = settings_from_args(args)
    name = f"{schema}.{table}"
    try:
        with database(settings) as url:
            print(asyncio.run(run(url, schema, table, args.identity)))
    except LookupError:
        print(f"error: table {name} does not exist (names are case-sensitive)", file=sys.stderr)
        return EXIT_USAGE
    except asyncpg.InsufficientPrivilegeError as exc:
        print(
            f"error: cannot change table {name}: {exc}; it takes the table's owner or a "
            f"superuser (connect with --database-url as that user)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except ReplicaIdentityRequired as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except asyncpg.LockNotAvailableError:
        print(
            f"error: table {name} stayed locked by another operation for 5 s; try again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (*db_errors.FAILED, RuntimeError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
