"""Channels: list, create, get, update, delete (the specification's Channel Management)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.errors import ApiError, bad_request
from pgrealtime.api.http import json_response
from pgrealtime.api.params import parse_body, parse_uuid
from pgrealtime.engine.channels import pattern_error
from pgrealtime.util.timefmt import rfc3339
from pgrealtime.webhooks.policy import validate_webhook_url

routes = web.RouteTableDef()

INVALID_REQUEST = "REALTIME_INVALID_CHANNEL_REQUEST"
MAX_WEBHOOK_URLS = 20
MAX_DESCRIPTION = 1000
# a per-channel webhook signing secret (write-only: never in a response)
MIN_WEBHOOK_SECRET = 16
MAX_WEBHOOK_SECRET = 256
COLUMNS = "id, pattern, description, webhook_urls, enabled, created_at, updated_at"


class ChannelCreate(msgspec.Struct, forbid_unknown_fields=True):
    pattern: str
    description: str | None = None
    webhookUrls: list[str] | None = None
    enabled: bool = True
    webhookSecret: str | None = None


class ChannelUpdate(msgspec.Struct, forbid_unknown_fields=True):
    pattern: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET
    webhookUrls: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    webhookSecret: str | msgspec.UnsetType | None = msgspec.UNSET


def channel_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "pattern": row["pattern"],
        "description": row["description"],
        "webhookUrls": list(row["webhook_urls"]) if row["webhook_urls"] is not None else None,
        "enabled": row["enabled"],
        "createdAt": rfc3339(row["created_at"]),
        "updatedAt": rfc3339(row["updated_at"]),
    }


def _check_fields(
    pattern: str | msgspec.UnsetType,
    description: str | msgspec.UnsetType | None,
    webhook_urls: list[str] | msgspec.UnsetType | None,
) -> None:
    if isinstance(pattern, str):
        problem = pattern_error(pattern)
        if problem is not None:
            raise bad_request(problem, "REALTIME_INVALID_CHANNEL_PATTERN")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION:
        raise bad_request(
            f"description must be at most {MAX_DESCRIPTION} characters", INVALID_REQUEST
        )
    if isinstance(description, str) and "\x00" in description:  # PostgreSQL text cannot
        raise bad_request("description must not contain the character U+0000", INVALID_REQUEST)
    if isinstance(webhook_urls, list):
        if len(webhook_urls) > MAX_WEBHOOK_URLS:
            raise bad_request(f"at most {MAX_WEBHOOK_URLS} webhook URLs", INVALID_REQUEST)
        for url in webhook_urls:
            problem = validate_webhook_url(url)
            if problem is not None:
                raise bad_request(problem, INVALID_REQUEST)


def _check_secret(secret: str | msgspec.UnsetType | None) -> None:
    if not isinstance(secret, str):
        return
    if not MIN_WEBHOOK_SECRET <= len(secret) <= MAX_WEBHOOK_SECRET:
        raise bad_request(
            f"webhookSecret must be {MIN_WEBHOOK_SECRET} to {MAX_WEBHOOK_SECRET} characters",
            INVALID_REQUEST,
        )
    if not secret.isprintable() or not secret.isascii():
        raise bad_request("webhookSecret must be printable ASCII", INVALID_REQUEST)


async def _changing(request: web.Request, conn: asyncpg.Connection) -> None:
    """Mark this transaction's channel change as this process's: the channels-changed
    NOTIFY carries the origin, and the listener skips it, since the handler re-checks
    the subscriptions itself (`Revalidator.now`) before answering: one re-check."""
    await conn.execute("SELECT set_config('realtime.origin', $1, true)", request.app[keys.ORIGIN])


async def _set_secret(conn: asyncpg.Connection, channel_id: Any, secret: str | None) -> None:
    """Store (or, with None, remove) a channel's own webhook signing secret."""
    if secret is None:
        await conn.execute(
            "DELETE FROM realtime.channel_webhook_secrets WHERE channel_id = $1", channel_id
        )
        return
    await conn.execute(
        "INSERT INTO realtime.channel_webhook_secrets (channel_id, secret) VALUES ($1, $2)"
        " ON CONFLICT (channel_id) DO UPDATE SET secret = EXCLUDED.secret, updated_at = now()",
        channel_id,
        secret,
    )


def _duplicate(pattern: str) -> ApiError:
    return ApiError(409, "DATABASE_DUPLICATE", f"A channel with pattern {pattern!r} already exists")


def _not_found() -> ApiError:
    return ApiError(404, "REALTIME_CHANNEL_NOT_FOUND", "Channel not found")


@routes.get("/api/realtime/channels")
async def list_channels(request: web.Request) -> web.Response:
    rows = await request.app[keys.POOL].fetch(
        f"SELECT {COLUMNS} FROM realtime.channels ORDER BY created_at, id"
    )
    return json_response([channel_json(r) for r in rows])


@routes.post("/api/realtime/channels")
async def create_channel(request: web.Request) -> web.Response:
    body = await parse_body(request, ChannelCreate, INVALID_REQUEST)
    _check_fields(body.pattern, body.description, body.webhookUrls)
    _check_secret(body.webhookSecret)
    try:
        async with request.app[keys.POOL].acquire() as conn, conn.transaction():
            await _changing(request, conn)
            row = await conn.fetchrow(
                "INSERT INTO realtime.channels (pattern, description, webhook_urls, enabled)"
                f" VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}",
                body.pattern,
                body.description,
                body.webhookUrls,
                body.enabled,
            )
            if body.webhookSecret is not None:
                await _set_secret(conn, row["id"], body.webhookSecret)
    except asyncpg.UniqueViolationError as exc:
        raise _duplicate(body.pattern) from exc
    await request.app[keys.REVALIDATOR].now()
    return json_response(channel_json(row), status=201)


@routes.get("/api/realtime/channels/{id}")
async def get_channel(request: web.Request) -> web.Response:
    channel_id = parse_uuid(request.match_info["id"], "id")
    row = await request.app[keys.POOL].fetchrow(
        f"SELECT {COLUMNS} FROM realtime.channels WHERE id = $1",
        channel_id,
    )
    if row is None:
        raise _not_found()
    return json_response(channel_json(row))


# Column names come from this fixed map, never from the request.
UPDATABLE = {
    "pattern": "pattern",
    "description": "description",
    "webhookUrls": "webhook_urls",
    "enabled": "enabled",
}


@routes.put("/api/realtime/channels/{id}")
async def update_channel(request: web.Request) -> web.Response:
    channel_id = parse_uuid(request.match_info["id"], "id")
    body = await parse_body(request, ChannelUpdate, INVALID_REQUEST)
    _check_fields(body.pattern, body.description, body.webhookUrls)
    _check_secret(body.webhookSecret)
    changes = {
        UPDATABLE[name]: value
        for name in UPDATABLE
        if (value := getattr(body, name)) is not msgspec.UNSET
    }
    if "pattern" in changes and changes["pattern"] is None:
        raise bad_request("pattern cannot be null", INVALID_REQUEST)
    if "enabled" in changes and changes["enabled"] is None:
        raise bad_request("enabled cannot be null", INVALID_REQUEST)
    secret = body.webhookSecret
    if not changes and secret is msgspec.UNSET:
        raise bad_request(
            "Nothing to update: give pattern, description, webhookUrls, enabled or webhookSecret",
            INVALID_REQUEST,
        )
    # only the secret: the row is still touched, so updatedAt says something changed
    assignments = (
        ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
        or "updated_at = now()"
    )
    try:
        async with request.app[keys.POOL].acquire() as conn, conn.transaction():
            await _changing(request, conn)
            row = await conn.fetchrow(
                f"UPDATE realtime.channels SET {assignments} WHERE id = $1 RETURNING {COLUMNS}",
                channel_id,
                *changes.values(),
            )
            if row is not None and secret is not msgspec.UNSET:
                await _set_secret(conn, channel_id, secret)
    except asyncpg.UniqueViolationError as exc:
        raise _duplicate(str(changes.get("pattern"))) from exc
    if row is None:
        raise _not_found()
    await request.app[keys.REVALIDATOR].now()
    return json_response(channel_json(row))


@routes.delete("/api/realtime/channels/{id}")
async def delete_channel(request: web.Request) -> web.Response:
    channel_id = parse_uuid(request.match_info["id"], "id")
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        await _changing(request, conn)
        deleted = await conn.fetchval(
            "DELETE FROM realtime.channels WHERE id = $1 RETURNING id", channel_id
        )
    if deleted is None:
        raise _not_found()
    await request.app[keys.REVALIDATOR].now()
    return json_response({"message": "Channel deleted"})
