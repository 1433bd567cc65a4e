"""`pgrealtime serve`: run the server (the banner, the file limit, the collector)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from pgrealtime import __version__, keys
from pgrealtime.cli.database import database
from pgrealtime.cli.workers import Supervisor, worker_index
from pgrealtime.config import (
    ANON_KEY_PREFIX,
    Settings,
    add_connection_flags,
    add_server_flags,
    ensure_secrets,
    settings_from_args,
)
from pgrealtime.config.validate import EMBEDDED_BROKER, worker_count

DESCRIPTION = """\
Run the server: WebSocket pub/sub on /realtime, the REST API on /api/realtime, and
db:<table> change notifications. Without --database-url an embedded PostgreSQL is
started in the data directory. Every flag can also be set with the PGREALTIME_*
variable named in its help; a flag given here wins.
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_flags(serve)
    add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)


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


def _browsable(host: str) -> str:
    """A host a browser can open: a listen-on-everything address is this machine, and
    browsers refuse 0.0.0.0 as a destination (and need brackets around IPv6)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        return "localhost"
    return f"[{host}]" if ":" in host else host


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
        f"  Socket.IO:  http://{settings.host}:{settings.port}  (the @insforge/sdk baseUrl)",
        f"  REST:       http://{settings.host}:{settings.port}/api/realtime",
        f"  Dashboard:  http://{_browsable(settings.host)}:{settings.port}/dashboard"
        "   (sign in with the API key)",
        f"  Metrics:    http://{settings.host}:{settings.port}/metrics"
        + ("" if settings.metrics_public else "   (admin API key)"),
        f"  Data dir:   {settings.data_dir}",
        f"  Retention:  {retention}   (PATCH /api/realtime/config to change)",
    ]
    if generated_secrets:
        lines += [
            f"  API key:    {settings.api_key}   (admin; kept in {settings.data_dir}/secrets.json)",
            "  Client token: pgrealtime token --sub <user-uuid>",
        ]
    if settings.anon_key and settings.anon_key.startswith(ANON_KEY_PREFIX):
        lines.append(f"  Anon key:   {settings.anon_key}   (role anon; InsForge's anonKey)")
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
        days = await app[keys.POOL].fetchval("SELECT retention_days FROM realtime.config")
        _banner(settings, generated_secrets, webhook_from_data_dir, days)

    return announce


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from pgrealtime.app import create_app
    from pgrealtime.auth.setup import AuthSetupError, build_authenticator
    from pgrealtime.util.logs import setup_logging

    settings = settings_from_args(args)
    setup_logging(settings.log_level, settings.log_format)
    from_data_dir = not (settings.jwt_secret and settings.api_key)
    webhook_from_data_dir = not settings.webhook_secret
    ensure_secrets(settings, webhook=True)
    try:  # key files, the JWKS URL, algorithms: refused before the database starts
        build_authenticator(settings)
    except AuthSetupError as exc:
        raise SystemExit(f"error: {exc}") from exc
    _raise_fd_limit()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    count = worker_count(settings.workers) or 1
    index = worker_index()
    with database(settings) as url:
        if count > 1 and index is None:  # the parent: migrate, then run the workers
            loop.close()
            print(f"pgrealtime: starting {count} workers on port {settings.port}", flush=True)
            embedded = (settings.broker_url or "").strip() == EMBEDDED_BROKER
            return Supervisor(args.argv, url, count, broker=embedded).run()
        app = create_app(settings, url, migrate=index is None)  # the parent migrated
        if not index:  # one banner: a single server, or the first worker
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
            reuse_port=index is not None,  # workers share the port
        )
    return 0
