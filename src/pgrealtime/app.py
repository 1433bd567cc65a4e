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

from pgrealtime import keys
from pgrealtime.api import channels, dashboard, health, messages, openapi, permissions, tables
from pgrealtime.api import metrics as metrics_route
from pgrealtime.api import webhooks as webhook_routes
from pgrealtime.api.middleware import admin_middleware, error_middleware
from pgrealtime.auth.setup import build_authenticator
from pgrealtime.changes.cluster import ClusterFeed
from pgrealtime.changes.feed import ChangeFeed
from pgrealtime.changes.route import DbChannels
from pgrealtime.changes.tables import TableAllowList
from pgrealtime.config import FeedSettings, Settings, WebhookSettings
from pgrealtime.config.validate import broker_servers
from pgrealtime.dashboard import pages as dashboard_pages
from pgrealtime.db.migrate import apply_migrations
from pgrealtime.engine.authorize import SubscribeChecks
from pgrealtime.engine.bus.base import Bus
from pgrealtime.engine.bus.nats_bus import NatsBus
from pgrealtime.engine.bus.pg_notify import Listener
from pgrealtime.engine.bus.presence_link import PgPresenceLink, over_nats
from pgrealtime.engine.hub import Hub
from pgrealtime.engine.limits import ConnectionLimits, UserBudgets
from pgrealtime.engine.ordering import Ordering
from pgrealtime.engine.presence import Presence
from pgrealtime.engine.presence_cluster import ClusterPresenceStore
from pgrealtime.engine.publisher import Publisher
from pgrealtime.engine.retention import retention_loop
from pgrealtime.engine.revocation import Revalidator
from pgrealtime.observe import Metrics
from pgrealtime.observe.collector import PartsCollector
from pgrealtime.observe.database import DatabaseFigures
from pgrealtime.protocols.raw_ws.admission import Admission
from pgrealtime.protocols.raw_ws.auth_deadline import AuthDeadlines
from pgrealtime.protocols.raw_ws.endpoint import (
    CLOSE_GOING_AWAY,
    SHUTDOWN_REASON,
    Sessions,
    realtime_endpoint,
)
from pgrealtime.protocols.raw_ws.keepalive import Keepalive
from pgrealtime.protocols.raw_ws.replies import RawReplies
from pgrealtime.protocols.socketio.endpoint import socketio_endpoint
from pgrealtime.protocols.socketio.replies import SocketIOReplies
from pgrealtime.session.core import SessionContext
from pgrealtime.session.expiry import ExpiryClock
from pgrealtime.session.refresh import warn_expiring
from pgrealtime.webhooks import WebhookWorker

log = logging.getLogger(__name__)

# How long shutdown waits for publishes in flight (each is one batched INSERT; only
# an unreachable database makes this long) before closing connections anyway.
SHUTDOWN_PUBLISH_GRACE_SECONDS = 10.0
SOCKETIO_HEARTBEAT = 25.0  # Socket.IO's own default ping interval, when ours is off


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
        )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """On release: our statements leave no session state behind (settings and roles
    are transaction-local, listeners removed by whoever added them), so skip asyncpg's
    default reset, a round trip on every release, unless a transaction was left open."""
    if conn.is_in_transaction():
        await conn.reset()


async def open_pool(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        init=_init_connection,
        command_timeout=30,
        timeout=5,  # connecting: an unreachable database is an error soon, not a hang
        reset=_reset_connection,
    )


POOL_CLOSE_SECONDS = 5.0  # shutdown waits this long for queries in flight, then cuts


async def close_pool(pool: asyncpg.Pool, grace: float = POOL_CLOSE_SECONDS) -> None:
    """Close gracefully, but not for ever: a database that stopped answering would
    hold a query (and with it the shutdown) until the 30 s command timeout, or longer
    while the connection itself hangs."""
    try:
        await asyncio.wait_for(pool.close(), grace)
    except TimeoutError:
        log.warning("database connections still busy after %g s at shutdown: cut", grace)
        pool.terminate()


def create_app(settings: Settings, database_url: str, *, migrate: bool = True) -> web.Application:
    """The aiohttp application; `database_url` is the resolved PostgreSQL URL.
    `migrate=False`: the schema is current already (a worker: its parent migrated)."""
    assert settings.jwt_secret and settings.api_key
    app = web.Application(
        middlewares=[error_middleware, admin_middleware], client_max_size=1024 * 1024
    )
    app[keys.SETTINGS] = settings
    app[keys.DATABASE_URL] = database_url
    app[keys.MIGRATE] = migrate
    app[keys.AUTHENTICATOR], jwks = build_authenticator(settings)
    app[keys.SESSIONS] = Sessions()
    app[keys.KEEPALIVE] = Keepalive(settings.heartbeat_seconds)
    app[keys.SOCKETIO_KEEPALIVE] = Keepalive(settings.heartbeat_seconds or SOCKETIO_HEARTBEAT)
    app[keys.ADMISSION] = Admission(settings.max_connections, settings.max_connections_per_ip)
    app[keys.AUTH_DEADLINES] = AuthDeadlines(settings.auth_timeout_seconds)
    app[keys.ORIGIN] = uuid.uuid4().hex
    app[keys.HEALTH_EXTRAS] = {}
    if jwks is not None:  # fetched before the server listens, refreshed until it stops
        app.cleanup_ctx.append(lambda _app: jwks.running())
        app[keys.HEALTH_EXTRAS]["jwks"] = jwks.status
    app[keys.BACKGROUND] = []
    app.add_routes(health.routes)
    app.add_routes(channels.routes)
    app.add_routes(messages.routes)
    app.add_routes(permissions.routes)
    app.add_routes(tables.routes)
    app.add_routes(openapi.routes)
    webhook_routes.add_routes(app)
    dashboard.add_routes(app)
    dashboard_pages.add_routes(app)
    app[keys.OPENAPI_EXTRA_PATHS] = {**webhook_routes.OPENAPI_PATHS, **dashboard.OPENAPI_PATHS}
    app.router.add_get("/realtime", realtime_endpoint)
    app.router.add_route("*", "/socket.io/", socketio_endpoint)
    _observe(app)
    app.cleanup_ctx.append(_database)
    app.on_shutdown.append(_close_websockets)
    return app


async def _database(app: web.Application):
    """Pool and migrations first; then delivery, listener and timers; undone in reverse."""
    settings: Settings = app[keys.SETTINGS]
    url = app[keys.DATABASE_URL]
    if app[keys.MIGRATE]:
        conn = await asyncpg.connect(url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
    pool = await open_pool(url, settings.db_pool_size)
    app[keys.POOL] = pool
    hub = Hub(settings.send_buffer_bytes, flush_interval=settings.flush_interval_ms / 1000)
    hub.on_flushed = app[keys.METRICS].flushed
    delivery = Ordering(hub, pool)
    delivery.start()
    # with a broker, the bus carries this process's publishes: no NOTIFY for them
    # (db/functions/notify_message.sql)
    quiet = "quiet:" if broker_servers(settings.broker_url) else ""
    # each publish lane keeps its own connection (no pool round trip per batch)
    publisher = Publisher(
        pool,
        delivery,
        quiet + app[keys.ORIGIN],
        dsn=url,
        max_batch_bytes=settings.publish_batch_bytes,
    )
    publisher.observe_batch = app[keys.METRICS].publish_batch
    await publisher.start()
    app[keys.PUBLISHER] = publisher
    feed_settings = FeedSettings.of(settings)
    feed = ChangeFeed(url, feed_settings) if feed_settings.enabled else None
    db_channels = DbChannels(
        pool,
        feed,
        feed_settings.publication,
        TableAllowList(feed_settings.tables),
    )
    cluster_feed = None
    if feed is not None:  # one slot reader per database, changes relayed to the others
        cluster_feed = ClusterFeed(
            feed, pool, url, app[keys.ORIGIN], keep_seconds=settings.changes_relay_keep_seconds
        )
        db_channels.feed = cluster_feed
        cluster_feed.on_batch(db_channels.deliver, db_channels.has_subscribers)
        try:
            await cluster_feed.start()
        except (OSError, asyncpg.PostgresError, RuntimeError) as exc:
            log.warning("change notifications are off: %s", exc)
        app[keys.HEALTH_EXTRAS]["changes"] = cluster_feed.status
        app[keys.HEALTH_EXTRAS]["cluster"] = cluster_feed.leadership.describe
    app[keys.CHANGES] = feed
    app[keys.HUB] = hub
    app[keys.DELIVERY] = delivery
    presence = None  # --no-presence
    presence_store = None  # members of every process (engine/presence_cluster.py)
    if settings.presence:
        presence_store = ClusterPresenceStore(
            app[keys.ORIGIN], settings.presence_heartbeat_seconds, settings.presence_lease_seconds
        )
        presence = Presence(hub, presence_store, settings.presence_snapshot_limit,
                            settings.max_presence_state_bytes)  # fmt: skip
        app[keys.HEALTH_EXTRAS]["presence"] = presence_store.describe
    warn_before = settings.token_expiry_warning_seconds
    app[keys.SESSION_CONTEXT] = SessionContext(
        hub=hub,
        authenticator=app[keys.AUTHENTICATOR],
        publisher=publisher,
        pool=pool,
        max_frame_bytes=settings.max_frame_bytes,
        db_channels=db_channels,
        delivery=delivery,
        subscribe_checks=SubscribeChecks(pool),
        expiry=ExpiryClock(),
        expiry_warnings=ExpiryClock(warn_expiring) if warn_before else None,
        token_expiry_warning=warn_before,
        max_recover=settings.max_recover,
        max_recover_bytes=settings.max_recover_bytes,
        max_recover_live_bytes=settings.max_recover_live_bytes,
        recover_read_timeout=settings.recover_read_timeout_seconds,
        recoveries=asyncio.Semaphore(settings.max_concurrent_recoveries),
        limits=ConnectionLimits(
            publish_rate=settings.publish_rate,
            publish_burst=settings.publish_burst,
            max_subscriptions=settings.max_subscriptions,
            frame_rate=settings.frame_rate,
            frame_burst=settings.frame_burst,
            subscribe_rate=settings.subscribe_rate,
            subscribe_burst=settings.subscribe_burst,
            presence_rate=settings.presence_rate,
            presence_burst=settings.presence_burst,
        ),
        user_budgets=UserBudgets(settings.user_publish_rate, settings.user_publish_bytes_rate),
        max_payload_bytes=settings.max_payload_bytes,
        presence=presence,
    )
    revalidator = Revalidator(app[keys.SESSIONS].live, pool)
    app[keys.REVALIDATOR] = revalidator
    listener: Bus
    presence_link = None
    servers = broker_servers(settings.broker_url)
    if servers:  # NATS carries the messages themselves (engine/bus/nats_bus.py)
        bus = NatsBus(servers, url, pool, delivery, app[keys.ORIGIN], revalidator.request)
        publisher.on_stored = bus.publish_stored
        app[keys.HEALTH_EXTRAS]["bus"] = bus.describe
        if cluster_feed is not None:  # db: changes relayed over the bus too
            cluster_feed.ride(bus.stream)
        else:  # the members and leader as the bus's election sees them
            app[keys.HEALTH_EXTRAS]["cluster"] = bus.describe_cluster
        if presence_store is not None:
            over_nats(presence_store, bus)
        listener = bus
    else:
        listener = Listener(
            url, delivery, app[keys.ORIGIN], on_channels_changed=revalidator.request
        )
        if presence_store is not None:
            presence_link = PgPresenceLink(url, presence_store)
    publisher.on_lost_reply = listener.deliver_own
    listener.start()
    if presence_link is not None:
        presence_link.start()
    if presence_store is not None:
        presence_store.start()
    app[keys.LISTENER] = listener
    _spawn(app, lambda: retention_loop(pool, settings.retention_interval_seconds))
    webhooks = app[keys.WEBHOOKS] = WebhookWorker(pool, WebhookSettings.of(settings))
    webhooks.observe_attempt = app[keys.METRICS].webhook_attempt
    await webhooks.start()
    yield
    await webhooks.stop()
    app[keys.KEEPALIVE].close()
    app[keys.SOCKETIO_KEEPALIVE].close()
    app[keys.AUTH_DEADLINES].close()
    app[keys.SESSION_CONTEXT].expiry.close()
    if app[keys.SESSION_CONTEXT].expiry_warnings is not None:
        app[keys.SESSION_CONTEXT].expiry_warnings.close()
    for task in app[keys.BACKGROUND]:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if presence_store is not None:  # its goodbye goes out before the bus stops
        await presence_store.stop()
    await listener.stop()
    if presence_link is not None:
        await presence_link.stop()
    await revalidator.stop()
    if cluster_feed is not None:
        await cluster_feed.stop()
    await delivery.stop()
    await publisher.close()
    await close_pool(pool)


def _observe(app: web.Application) -> None:
    """GET /metrics: one registry per server, read at scrape time (observe/)."""
    app[keys.METRICS] = Metrics()
    app[keys.DATABASE_FIGURES] = DatabaseFigures()
    sessions = app[keys.SESSIONS]  # both protocols' sessions, told apart for the label
    views = [sessions.protocol(replies) for replies in (RawReplies, SocketIOReplies)]
    app[keys.PROTOCOL_SESSIONS] = {view.name: view for view in views}
    app[keys.METRICS].add(PartsCollector(lambda: metrics_route.server_parts(app)))
    app.add_routes(metrics_route.routes)


def _spawn(app: web.Application, factory: Callable) -> None:
    app[keys.BACKGROUND].append(asyncio.create_task(factory()))


async def _close_websockets(app: web.Application) -> None:
    """Close the WebSocket side in order (aiohttp has already stopped listening):
    act on no new frame, let the publishes in flight be stored, fanned out and
    answered, then close every connection with 1001 after what is queued for it."""
    sessions: Sessions = app[keys.SESSIONS]
    sessions.draining = True
    publisher: Publisher | None = app.get(keys.PUBLISHER)
    if publisher is not None:
        try:
            await asyncio.wait_for(publisher.drained(), SHUTDOWN_PUBLISH_GRACE_SECONDS)
        except TimeoutError:
            log.warning("shutting down with %d publishes unanswered", publisher.in_flight)
    sessions.close_all(CLOSE_GOING_AWAY, SHUTDOWN_REASON)
