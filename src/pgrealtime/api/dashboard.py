"""GET /api/realtime/dashboard: the figures the dashboard polls (admin-only, like every
/api/realtime route; the middleware checks that).

A plain JSON snapshot rather than a stream: a poll a second is as live as a person
reads, needs no connection held per viewer, and is one documented, testable route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.http import ERROR_SCHEMA, json_content, json_response
from pgrealtime.dashboard.figures import MAX_CHANNELS, MAX_COUNTED_PENDING, Parts, snapshot

PATH = "/api/realtime/dashboard"


async def dashboard_snapshot(request: web.Request) -> web.Response:
    app = request.app
    parts = Parts(
        hub=app[keys.HUB],
        db_channels=app[keys.SESSION_CONTEXT].db_channels,
        publisher=app[keys.PUBLISHER],
        delivery=app[keys.DELIVERY],
        feed=app[keys.CHANGES],
        listener=app.get(keys.LISTENER),
        pool=app[keys.POOL],
        connections=len(app[keys.SESSIONS].live),
        presence=app[keys.SESSION_CONTEXT].presence,
    )
    return json_response(await snapshot(parts))


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, dashboard_snapshot)


_COUNTER = {"type": "integer", "minimum": 0}
REQUIRED = (
    "monotonicSeconds connections published delivered changesDelivered channels"
    " channelsWithSubscribers listener changes webhooks presence"
).split()
_SNAPSHOT: dict[str, Any] = {
    "type": "object",
    "required": REQUIRED,
    "properties": {
        "monotonicSeconds": {
            "type": "number",
            "description": "a monotonic clock: rates are differences between two snapshots",
        },
        "connections": {**_COUNTER, "description": "open WebSocket sessions (this process)"},
        "published": {**_COUNTER, "description": "messages stored from WebSocket publishes"},
        "delivered": {**_COUNTER, "description": "messages queued to WebSocket subscribers"},
        "changesDelivered": {**_COUNTER, "description": "row changes the change feed handed on"},
        "channels": {
            "type": "array",
            "maxItems": MAX_CHANNELS,
            "description": "channels with subscribers on this process, busiest first",
            "items": {
                "type": "object",
                "required": ["name", "subscribers"],
                "properties": {"name": {"type": "string"}, "subscribers": _COUNTER},
            },
        },
        "channelsWithSubscribers": _COUNTER,
        "listener": {"type": ["string", "null"], "enum": ["connected", "reconnecting", None]},
        "changes": {
            "type": "object",
            "required": ["enabled", "state"],
            "description": "the change feed's status, as in /health's details",
        },
        "webhooks": {
            "type": "object",
            "required": ["pending", "pendingCapped"],
            "properties": {
                "pending": {
                    "type": ["integer", "null"],
                    "description": f"pending deliveries, counted up to {MAX_COUNTED_PENDING};"
                    " null when the database did not answer",
                },
                "pendingCapped": {"type": "boolean"},
            },
        },
        "presence": {
            "type": ["object", "null"],
            "additionalProperties": _COUNTER,
            "description": "presence members (one per user) of each listed channel;"
            " null when the server runs with --no-presence",
        },
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    PATH: {
        "get": {
            "tags": ["Dashboard"],
            "summary": "A snapshot of the server's live figures (what /dashboard shows)",
            "operationId": "getDashboardSnapshot",
            "responses": {
                "200": json_content(_SNAPSHOT, "The snapshot"),
                "401": json_content(ERROR_SCHEMA, "No or invalid admin credentials"),
            },
        }
    }
}
