"""`pgrealtime migrate`: apply the bundled SQL migrations and exit."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from pgrealtime.cli.database import database
from pgrealtime.config import add_connection_flags, settings_from_args
from pgrealtime.util.progress import step


def add_parser(commands: argparse._SubParsersAction) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="apply the database schema and exit",
        description="Apply the bundled SQL migrations not yet applied, then exit "
        "(serve does the same at start).",
    )
    add_connection_flags(migrate)
    migrate.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    from pgrealtime.db.migrate import apply_migrations

    settings = settings_from_args(args)

    async def run(url: str) -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    with database(settings) as url, step("Applying migrations"):
        applied = asyncio.run(run(url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0
