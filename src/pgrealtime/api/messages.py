"""Message history, statistics, deletion and the retention setting."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import orjson
from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.errors import bad_request
from pgrealtime.api.http import json_response
from pgrealtime.api.params import (
    optional_int,
    optional_text,
    optional_timestamp,
    optional_uuid,
    parse_body,
)
from pgrealtime.engine.retention import enforce_retention
from pgrealtime.util.timefmt import rfc3339

routes = web.RouteTableDef()

# The payload is read as jsonb's text and sent as it is (orjson.Fragment): decoding and
# encoding it again fails on what jsonb stores but a double or orjson cannot hold
# (1e400, integers beyond 64 bits, deep nesting: all possible from SQL publishes).
MESSAGE_COLUMNS = (
    "id, event_name, channel_id, channel_name, payload::text AS payload_text, sender_type,"
    " sender_id,"
    " ws_audience_count, wh_audience_count, wh_delivered_count, created_at, position"
)


def message_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "eventName": row["event_name"],
        "channelId": str(row["channel_id"]) if row["channel_id"] else None,
        "channelName": row["channel_name"],
        "payload": orjson.Fragment(row["payload_text"]),
        "senderType": row["sender_type"],
        "senderId": str(row["sender_id"]) if row["sender_id"] else None,
        "wsAudienceCount": row["ws_audience_count"],
        "whAudienceCount": row["wh_audience_count"],
        "whDeliveredCount": row["wh_delivered_count"],
        "createdAt": rfc3339(row["created_at"]),
        "position": row["position"],
    }


def _filters(conditions: dict[str, Any]) -> tuple[str, list[Any]]:
    """WHERE clause from fixed SQL fragments with bound values."""
    clauses, values = [], []
    for fragment, value in conditions.items():
        if value is not None:
            values.append(value)
            clauses.append(fragment.format(f"${len(values)}"))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


@routes.get("/api/realtime/messages")
async def list_messages(request: web.Request) -> web.Response:
    where, values = _filters(
        {
            "channel_id = {}": optional_uuid(request, "channelId"),
            "event_name = {}": optional_text(request, "eventName"),
        }
    )
    limit = optional_int(request, "limit", 100, 1, 1000)
    offset = optional_int(request, "offset", 0, 0, 2**31 - 1)
    n = len(values)
    rows = await request.app[keys.POOL].fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM realtime.messages{where}"
        f" ORDER BY created_at DESC, seq DESC LIMIT ${n + 1} OFFSET ${n + 2}",
        *values,
        limit,
        offset,
    )
    return json_response([message_json(r) for r in rows])


@routes.get("/api/realtime/messages/stats")
async def message_stats(request: web.Request) -> web.Response:
    where, values = _filters(
        {
            "channel_id = {}": optional_uuid(request, "channelId"),
            "created_at >= {}": optional_timestamp(request, "since"),
        }
    )
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        totals = await conn.fetchrow(
            "SELECT count(*) AS total, coalesce(sum(wh_audience_count), 0) AS audience,"
            " coalesce(sum(wh_delivered_count), 0) AS delivered"
            f" FROM realtime.messages{where}",
            *values,
        )
        top = await conn.fetch(
            "SELECT event_name, count(*) AS n FROM realtime.messages"
            f"{where} GROUP BY event_name"
            ' ORDER BY n DESC, event_name COLLATE "C" LIMIT 10',
            *values,
        )
        retention_days = await conn.fetchval("SELECT retention_days FROM realtime.config")
    audience = totals["audience"]
    return json_response(
        {
            "totalMessages": totals["total"],
            "whDeliveryRate": (totals["delivered"] / audience) if audience else 0,
            "topEvents": [{"eventName": r["event_name"], "count": r["n"]} for r in top],
            "retentionDays": retention_days,
        }
    )


@routes.delete("/api/realtime/messages")
async def delete_messages(request: web.Request) -> web.Response:
    where, values = _filters(
        {
            "channel_id = {}": optional_uuid(request, "channelId"),
            "created_at < {}": optional_timestamp(request, "before"),
        }
    )
    status = await request.app[keys.POOL].execute(
        f"DELETE FROM realtime.messages{where}",
        *values,
    )
    return json_response({"deleted": int(status.split()[-1])})


class ConfigUpdate(msgspec.Struct, forbid_unknown_fields=True):
    # float too: JSON (and the OpenAPI document's "integer") counts 30.0 as an integer
    retentionDays: int | float | None


@routes.get("/api/realtime/config")
async def get_config(request: web.Request) -> web.Response:
    days = await request.app[keys.POOL].fetchval("SELECT retention_days FROM realtime.config")
    return json_response({"retentionDays": days})


@routes.patch("/api/realtime/config")
async def update_config(request: web.Request) -> web.Response:
    body = await parse_body(request, ConfigUpdate)
    wanted = body.retentionDays
    if isinstance(wanted, float) and wanted.is_integer():
        wanted = int(wanted)
    if wanted is not None and (isinstance(wanted, float) or not 1 <= wanted <= 36500):
        raise bad_request("retentionDays must be null or an integer between 1 and 36500")
    pool = request.app[keys.POOL]
    days = await pool.fetchval(
        "UPDATE realtime.config SET retention_days = $1 RETURNING retention_days",
        wanted,
    )
    await enforce_retention(pool)
    return json_response({"retentionDays": days})
