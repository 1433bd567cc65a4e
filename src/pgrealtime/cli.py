"""Command line: `pgrealtime serve | migrate | token`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from pgrealtime import __version__
from pgrealtime.config import (
    Settings,
    add_connection_flags,
    add_server_flags,
    ensure_secrets,
    settings_from_args,
)
from pgrealtime.db.embedded import EmbeddedPostgres

log = logging.getLogger("pgrealtime")

DESCRIPTION = """\
pgrealtime: realtime channels, WebSocket pub/sub and PostgreSQL change notifications,
with permissions decided by your PostgreSQL row-level-security policies.

Quick start (no database needed; an embedded PostgreSQL is started for you):
  pgrealtime serve                      # prints the API key and where data lives
  pgrealtime token --sub $(python3 -c 'import uuid; print(uuid.uuid4())')
Every flag can also be set with a PGREALTIME_* environment variable (see --help of each).
"""


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured PostgreSQL URL, or the embedded server of the data directory for
    the duration. An embedded server that was already running (a `pgrealtime serve`
    using it) is left running afterwards."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir, port=settings.embedded_port)
    was_running = (embedded.pgdata / "postmaster.pid").exists() and embedded.is_running()
    if not was_running:
        print(f"Starting embedded PostgreSQL in {embedded.pgdata}", file=sys.stderr)
    url = embedded.start()
    try:
        yield url
    finally:
        if not was_running:
            embedded.stop()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Allocations between young-generation collections (default 700). A server holds
# tens of thousands of long-lived objects per thousand connections; with the default,
# collections run hundreds of times a second under load and the occasional full one
# (tens to hundreds of ms with 10,000 sessions) lands in every connection's latency.
GC_THRESHOLDS = (50_000, 20, 100)


async def _settle_gc(app: object) -> None:
    """After start-up: what exists now lives as long as the process, so the collector
    need never look at it again (gc.freeze), and collections become rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _banner(
    settings: Settings,
    generated_secrets: bool,
    webhook_from_data_dir: bool,
    retention_days: int | None,
) -> None:
    retention = (
        f"{retention_days} days"
        if retention_days is not None
        else "unlimited (messages kept forever)"
    )
    lines = [
        f"pgrealtime {__version__} listening on http://{settings.host}:{settings.port}",
        f"  WebSocket:  ws://{settings.host}:{settings.port}/realtime",
        f"  REST:       http://{settings.host}:{settings.port}/api/realtime",
        f"  Data dir:   {settings.data_dir}",
        f"  Retention:  {retention}   (PATCH /api/realtime/config to change)",
    ]
    if generated_secrets:
        lines += [
            f"  API key:    {settings.api_key}   (admin; kept in {settings.data_dir}/secrets.json)",
            "  Client token: pgrealtime token --sub <user-uuid>",
        ]
    if webhook_from_data_dir:
        lines.append(
            f"  Webhooks:   signed with the webhook_secret kept in {settings.data_dir}/secrets.json"
        )
    print("\n".join(lines), flush=True)


def _announce(
    settings: Settings, generated_secrets: bool, webhook_from_data_dir: bool
) -> Callable[[Any], Awaitable[None]]:
    """A start-up hook: the banner once the database is ready (it shows the retention
    setting, which lives there)."""

    async def announce(app: Any) -> None:  # the aiohttp application
        days = await app["pool"].fetchval("SELECT retention_days FROM realtime.config")
        _banner(settings, generated_secrets, webhook_from_data_dir, days)

    return announce


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from pgrealtime.app import create_app
    from pgrealtime.logs import setup_logging

    settings = settings_from_args(args)
    setup_logging(settings.log_level, settings.log_format)
    from_data_dir = not (settings.jwt_secret and settings.api_key)
    webhook_from_data_dir = not settings.webhook_secret
    ensure_secrets(settings, webhook=True)
    _raise_fd_limit()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    with database(settings) as url:
        app = create_app(settings, url)
        app.on_startup.append(_announce(settings, from_data_dir, webhook_from_data_dir))
        app.on_startup.append(_settle_gc)
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
            shutdown_timeout=10,
            loop=loop,
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from pgrealtime.db.migrate import apply_migrations

    settings = settings_from_args(args)

    async def run(url: str) -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    with database(settings) as url:
        applied = asyncio.run(run(url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from pgrealtime.auth import mint_token

    if args.expires_in <= 0:
        print("error: --expires-in (--ttl) must be a positive number of seconds", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    ensure_secrets(settings)
    assert settings.jwt_secret is not None
    try:
        token = mint_token(
            settings.jwt_secret,
            role=args.role,
            sub=args.sub,
            email=args.email,
            expires_in=args.expires_in,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgrealtime",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgrealtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    add_connection_flags(serve)
    add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply the database schema and exit")
    add_connection_flags(migrate)
    migrate.set_defaults(func=cmd_migrate)

    token = commands.add_parser("token", help="print a client token signed with the JWT secret")
    add_connection_flags(token)
    token.add_argument("--role", default="authenticated",
                       choices=["anon", "authenticated", "project_admin"])  # fmt: skip
    token.add_argument("--sub", help="the user's UUID (required for role authenticated)")
    token.add_argument("--email", help="optional email claim")
    token.add_argument("--expires-in", "--ttl", dest="expires_in", type=int, default=3600,
                       help="seconds until the token's exp (default 3600; the server "
                       "refuses user and admin tokens without exp)")  # fmt: skip
    token.set_defaults(func=cmd_token)

    from pgrealtime.changes.admin import add_replica_identity_parser

    add_replica_identity_parser(commands)

    _bench_entry(commands)
    return parser


def _bench_entry(commands: argparse._SubParsersAction) -> None:
    """`pgrealtime bench`: a thin entry to the load tools in the repository's bench/,
    which the wheel does not ship. Nothing of bench is imported until the command
    runs; bench's own parser then takes every argument after `bench` (`--help` too)."""
    bench = commands.add_parser(
        "bench",
        help="load-test pgrealtime against a minimal aiohttp baseline (source checkout)",
        description="Runs the repository's bench/ (python -m bench); "
        "`pgrealtime bench --help` lists its flags.",
        # every argument after `bench` (`--help` too) is left to bench's own parser, which
        # knows the flags: this one has no options and so reads nothing as an option
        add_help=False,
        prefix_chars="\0",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    """Find a checkout's bench/ (above this package, else the current directory) and
    hand it the arguments; exit 2 where there is none (an installed wheel)."""
    import importlib
    from pathlib import Path

    for root in (*Path(__file__).resolve().parents, Path.cwd()):
        if (root / "bench" / "command.py").is_file() and (root / "src" / "pgrealtime").is_dir():
            break
    else:
        print(
            "pgrealtime bench: the load tools are not part of the installed package. "
            "Run them from a clone of the repository: `python -m bench <scenario>` "
            "(or `pgrealtime bench <scenario>`) at its root.",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    command = importlib.import_module("bench.command")
    return command.main(args.bench_args, prog="pgrealtime bench")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
