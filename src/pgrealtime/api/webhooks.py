"""Webhook deliveries: a message's, or the latest of any message; retry failed ones.

Admin-only like every /api/realtime route (the middleware checks that). Operators
need this when a receiver was broken: to see what failed and why, then send again.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.errors import ApiError
from pgrealtime.api.http import ERROR_SCHEMA, json_content, json_response
from pgrealtime.api.params import optional_int
from pgrealtime.util.timefmt import rfc3339
from pgrealtime.webhooks import store

MESSAGE_NOT_FOUND = "REALTIME_MESSAGE_NOT_FOUND"
STATUSES = ("pending", "delivered", "failed", "dead")
DEFAULT_RECENT_STATUSES = ("failed", "dead")
MAX_RECENT = 500


def _message_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as exc:
        raise ApiError(400, "INVALID_INPUT", "message id must be a UUID") from exc


def delivery_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "messageId": str(row["message_id"]),
        "url": row["url"],
        "status": row["status"],
        "attempts": row["attempts"],
        "lastError": row["last_error"],
        "lastStatusCode": row["last_status_code"],
        "nextAttemptAt": rfc3339(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "deliveredAt": rfc3339(row["delivered_at"]),
        "createdAt": rfc3339(row["created_at"]),
        "updatedAt": rfc3339(row["updated_at"]),
    }


async def list_deliveries(request: web.Request) -> web.Response:
    message_id = _message_id(request)
    pool: asyncpg.Pool = request.app[keys.POOL]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        if not await store.message_exists(conn, message_id):
            raise ApiError(404, MESSAGE_NOT_FOUND, "Message not found")
        rows = await store.list_deliveries(conn, message_id)
    return json_response([delivery_json(r) for r in rows])


async def retry_deliveries(request: web.Request) -> web.Response:
    message_id = _message_id(request)
    pool: asyncpg.Pool = request.app[keys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        if not await store.message_exists(conn, message_id):
            raise ApiError(404, MESSAGE_NOT_FOUND, "Message not found")
        requeued = await store.requeue(conn, message_id)
    return json_response({"requeued": requeued})


def _statuses(request: web.Request) -> tuple[str, ...]:
    given = request.query.get("status")
    if given is None:
        return DEFAULT_RECENT_STATUSES
    wanted = tuple(given.split(","))
    if not all(s in STATUSES for s in wanted):
        raise ApiError(
            400, "INVALID_INPUT", f"status must be a comma-separated list of {', '.join(STATUSES)}"
        )
    return wanted


async def recent_deliveries(request: web.Request) -> web.Response:
    """The latest deliveries of any message (failures by default), newest change first."""
    statuses = _statuses(request)
    limit = optional_int(request, "limit", 50, 1, MAX_RECENT)
    rows = await store.recent_deliveries(request.app[keys.POOL], statuses, limit)
    return json_response(
        [
            {**delivery_json(r), "channelName": r["channel_name"], "eventName": r["event_name"]}
            for r in rows
        ]
    )


def add_routes(app: web.Application, prefix: str = "/api/realtime") -> None:
    app.router.add_get(f"{prefix}/webhooks/deliveries", recent_deliveries)
    app.router.add_get(f"{prefix}/messages/{{id}}/deliveries", list_deliveries)
    app.router.add_post(f"{prefix}/messages/{{id}}/deliveries/retry", retry_deliveries)


_DELIVERY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "messageId", "url", "status", "attempts", "createdAt"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "X-InsForge-Delivery-ID"},
        "messageId": {"type": "string", "format": "uuid"},
        "url": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "delivered", "failed", "dead"]},
        "attempts": {"type": "integer", "description": "attempts started so far"},
        "lastError": {"type": ["string", "null"]},
        "lastStatusCode": {"type": ["integer", "null"]},
        "nextAttemptAt": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when a pending delivery is tried next",
        },
        "deliveredAt": {"type": ["string", "null"], "format": "date-time"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
    },
}

_ID_PARAM: dict[str, Any] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "message id",
    "schema": {"type": "string", "format": "uuid"},
}


def openapi_paths(prefix: str = "/api/realtime") -> dict[str, Any]:
    """OpenAPI 3.1 path items of the two routes, to merge into the served document."""
    common = {
        "400": json_content(ERROR_SCHEMA, "The id is not a UUID (INVALID_INPUT)"),
        "401": json_content(ERROR_SCHEMA, "No or invalid admin credentials"),
        "404": json_content(ERROR_SCHEMA, "No such message (REALTIME_MESSAGE_NOT_FOUND)"),
    }
    recent = {
        **_DELIVERY,
        "required": [*_DELIVERY["required"], "channelName", "eventName"],
        "properties": {
            **_DELIVERY["properties"],
            "channelName": {"type": "string"},
            "eventName": {"type": "string"},
        },
    }
    status_list = "(pending|delivered|failed|dead)"
    return {
        f"{prefix}/webhooks/deliveries": {
            "get": {
                "tags": ["Webhooks"],
                "summary": "The latest webhook deliveries of any message",
                "description": "Newest change first; failed and dead ones unless `status` "
                "says otherwise (the dashboard's list of failures).",
                "operationId": "listRecentDeliveries",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "comma-separated statuses (default failed,dead)",
                        "schema": {
                            "type": "string",
                            "pattern": f"^{status_list}(,{status_list})*$",
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_RECENT,
                            "default": 50,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The deliveries",
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": recent}}
                        },
                    },
                    "400": json_content(ERROR_SCHEMA, "A bad status or limit (INVALID_INPUT)"),
                    "401": common["401"],
                },
            }
        },
        f"{prefix}/messages/{{id}}/deliveries": {
            "get": {
                "tags": ["Webhooks"],
                "summary": "List the webhook deliveries of a message",
                "description": "One entry per webhook URL of the message's channel.",
                "operationId": "listMessageDeliveries",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "The deliveries",
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": _DELIVERY}}
                        },
                    },
                    **common,
                },
            }
        },
        f"{prefix}/messages/{{id}}/deliveries/retry": {
            "post": {
                "tags": ["Webhooks"],
                "summary": "Retry the failed and dead webhook deliveries of a message",
                "description": "They become pending now, with a fresh retry period.",
                "operationId": "retryMessageDeliveries",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "How many deliveries were queued again",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["requeued"],
                                    "properties": {"requeued": {"type": "integer"}},
                                }
                            }
                        },
                    },
                    **common,
                },
            }
        },
    }


OPENAPI_PATHS: dict[str, Any] = openapi_paths()
