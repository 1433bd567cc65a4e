"""The server's shared state, as typed aiohttp application keys.

One module names every piece of state app.py assembles and the handlers, the WebSocket
endpoint and the tests read, with its type: `app[keys.POOL]` is an asyncpg.Pool to a
type checker, and a misspelt key is an import error instead of a KeyError. The types
are imported for annotations only, so this module sits below everything that uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import asyncpg

    from pgrealtime.auth.tokens import Authenticator
    from pgrealtime.changes.feed import ChangeFeed
    from pgrealtime.config import Settings
    from pgrealtime.engine.bus.base import Bus
    from pgrealtime.engine.hub import Hub
    from pgrealtime.engine.ordering import Ordering
    from pgrealtime.engine.publisher import Publisher
    from pgrealtime.engine.revocation import Revalidator
    from pgrealtime.observe import Metrics
    from pgrealtime.observe.collector import ProtocolSessions
    from pgrealtime.observe.database import DatabaseFigures
    from pgrealtime.protocols.raw_ws.admission import Admission
    from pgrealtime.protocols.raw_ws.auth_deadline import AuthDeadlines
    from pgrealtime.protocols.raw_ws.endpoint import Sessions
    from pgrealtime.protocols.raw_ws.keepalive import Keepalive
    from pgrealtime.session.core import SessionContext
    from pgrealtime.webhooks import WebhookWorker

# set by create_app
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
DATABASE_URL: web.AppKey[str] = web.AppKey("database_url")
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
KEEPALIVE: web.AppKey[Keepalive] = web.AppKey("keepalive")
# Socket.IO's heartbeat is part of its protocol: on even with --heartbeat-seconds 0
SOCKETIO_KEEPALIVE: web.AppKey[Keepalive] = web.AppKey("socketio_keepalive")
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
AUTH_DEADLINES: web.AppKey[AuthDeadlines] = web.AppKey("auth_deadlines")
ORIGIN: web.AppKey[str] = web.AppKey("origin")  # this process's id in NOTIFY payloads
MIGRATE: web.AppKey[bool] = web.AppKey("migrate")  # False in a worker: its parent migrated
HEALTH_EXTRAS: web.AppKey[dict[str, Callable[[], Any]]] = web.AppKey("health_extras")
BACKGROUND: web.AppKey[list[asyncio.Task]] = web.AppKey("background")
OPENAPI_EXTRA_PATHS: web.AppKey[dict[str, Any]] = web.AppKey("openapi_extra_paths")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")  # GET /metrics (observe/)
DATABASE_FIGURES: web.AppKey[DatabaseFigures] = web.AppKey("database_figures")
# each protocol's live sessions, by its name (the metrics' `protocol` label)
PROTOCOL_SESSIONS: web.AppKey[dict[str, ProtocolSessions]] = web.AppKey("protocol_sessions")
# set once the database is up (app._database)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
PUBLISHER: web.AppKey[Publisher] = web.AppKey("publisher")
CHANGES: web.AppKey[ChangeFeed | None] = web.AppKey("changes")
HUB: web.AppKey[Hub] = web.AppKey("hub")
DELIVERY: web.AppKey[Ordering] = web.AppKey("delivery")
SESSION_CONTEXT: web.AppKey[SessionContext] = web.AppKey("session_context")
LISTENER: web.AppKey[Bus] = web.AppKey("listener")  # the bus (engine/bus/base)
REVALIDATOR: web.AppKey[Revalidator] = web.AppKey("revalidator")
WEBHOOKS: web.AppKey[WebhookWorker] = web.AppKey("webhooks")
