"""Assemble the server: routes, start-up and shutdown order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import asyncpg
import orjson
from aiohttp import web

from pgrealtime.api import channels, health, messages, openapi, permissions
from pgrealtime.api import webhooks as webhook_routes
from pgrealtime.api.middleware import admin_middleware, error_middleware
from pgrealtime.auth import Authenticator
from pgrealtime.changes.feed import ChangeFeed
from pgrealtime.config import Settings
from pgrealtime.db_channels import DbChannels
from pgrealtime.db.migrate import apply_migrations
from pgrealtime.delivery import Delivery
from pgrealtime.hub import Hub
from pgrealtime.listener import Listener
from pgrealtime.publisher import Publisher
from pgrealtime.retention import retention_loop
from pgrealtime.webhooks import WebhookWorker
from pgrealtime.ws.endpoint import CLOSE_GOING_AWAY, Sessions, realtime_endpoint
from pgrealtime.ws.session import SessionContext

log = logging.getLogger(__name__)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
        )


async def open_pool(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=1, max_size=size, init=_init_connection, command_timeout=30
    )


def create_app(settings: Settings, database_url: str) -> web.Application:
    """The aiohttp application; `database_url` is the resolved PostgreSQL URL."""
    assert settings.jwt_secret and settings.api_key
    app = web.Application(
        middlewares=[error_middleware, admin_middleware], client_max_size=1024 * 1024
    )
    app["settings"] = settings
    app["database_url"] = database_url
    app["authenticator"] = Authenticator(settings.jwt_secret, settings.api_key)
    app["sessions"] = Sessions()
    app["origin"] = uuid.uuid4().hex
    app["health_extras"] = {}
    app["background"] = []
    app.add_routes(health.routes)
    app.add_routes(channels.routes)
    app.add_routes(messages.routes)
    app.add_routes(permissions.routes)
    app.add_routes(openapi.routes)
    webhook_routes.add_routes(app)
    app["openapi_extra_paths"] = webhook_routes.OPENAPI_PATHS
    app.router.add_get("/realtime", realtime_endpoint)
    app.cleanup_ctx.append(_database)
    app.on_shutdown.append(_close_websockets)
    return app


async def _database(app: web.Application):
    """Pool and migrations first; then delivery, listener and timers; undone in reverse."""
    settings: Settings = app["settings"]
    url = app["database_url"]
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    pool = await open_pool(url, settings.db_pool_size)
    app["pool"] = pool
    hub = Hub(settings.send_buffer_bytes)
    delivery = Delivery(hub, pool)
    delivery.start()
    publisher = Publisher(pool, delivery, app["origin"])
    feed = None
    if settings.changes:
        feed = ChangeFeed(url, slot=settings.replication_slot, publication=settings.publication)
    db_channels = DbChannels(pool, feed, settings.publication)
    if feed is not None:
        feed.on_batch(db_channels.deliver)
        try:
            await feed.start()
        except (OSError, asyncpg.PostgresError, RuntimeError) as exc:
            log.warning("change notifications are off: %s", exc)
        app["health_extras"]["changes"] = feed.status
    app["changes"] = feed
    app["hub"] = hub
    app["delivery"] = delivery
    app["session_context"] = SessionContext(
        hub=hub,
        authenticator=app["authenticator"],
        publisher=publisher,
        pool=pool,
        max_frame_bytes=settings.max_frame_bytes,
        db_channels=db_channels,
    )
    listener = Listener(url, delivery, app["origin"])
    listener.start()
    app["listener"] = listener
    _spawn(app, lambda: retention_loop(pool, settings.retention_interval_seconds))
    webhooks = WebhookWorker(pool, settings)
    await webhooks.start()
    yield
    await webhooks.stop()
    for task in app["background"]:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await listener.stop()
    if feed is not None:
        await feed.stop()
    await delivery.stop()
    await pool.close()


def _spawn(app: web.Application, factory: Callable) -> None:
    app["background"].append(asyncio.create_task(factory()))


async def _close_websockets(app: web.Application) -> None:
    """Tell every client we are going away (1001) before the server stops."""
    for session in list(app["sessions"].live):
        session.close(CLOSE_GOING_AWAY, "server shutting down")
