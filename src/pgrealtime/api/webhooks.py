"""Webhook deliveries of a message: see every attempt's state, and retry failed ones.

Admin-only like every /api/realtime route (the middleware checks that). Operators
need this when a receiver was broken: to see why it failed, then send again.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.errors import ApiError
from pgrealtime.api.http import ERROR_SCHEMA, json_content, json_response
from pgrealtime.util.timefmt import rfc3339
from pgrealtime.webhooks import store

MESSAGE_NOT_FOUND = "REALTIME_MESSAGE_NOT_FOUND"


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


def add_routes(app: web.Application, prefix: str = "/api/realtime") -> None:
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
    return {
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
