"""The OpenAPI 3 document of the REST API, served at /api/realtime/openapi.json.

Written by hand next to the handlers; a test checks that every served route is
documented and every documented route is served.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from pgrealtime import keys
from pgrealtime.api import tables
from pgrealtime.api.http import ERROR_SCHEMA
from pgrealtime.api.http import json_content as _json

routes = web.RouteTableDef()

_uuid = {"type": "string", "format": "uuid"}
_time = {"type": "string", "format": "date-time"}
_nullable_text = {"type": ["string", "null"]}
_description = {"type": ["string", "null"], "maxLength": 1000}
_webhook_urls = {
    "type": ["array", "null"],
    "maxItems": 20,
    "items": {"type": "string", "format": "uri", "maxLength": 2048},
    "description": "http or https URLs with a host, without credentials or spaces",
}
_webhook_secret = {
    "type": ["string", "null"],
    "minLength": 16,
    "maxLength": 256,
    "pattern": "^[\\x20-\\x7e]*$",
    "writeOnly": True,
    "description": "Extension (not in the InsForge API): this channel's own webhook signing "
    "secret, printable ASCII; null removes it (the server's --webhook-secret signs "
    "then). Write-only: never returned.",
}
_pattern = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[A-Za-z0-9:._\\-/@#=+*%]+$",
    "description": "`*` (or `%`) matches any run of characters. Also refused (400 "
    "REALTIME_INVALID_CHANNEL_PATTERN): adjacent wildcards, no literal character, "
    "a `db:` prefix",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_errors = {
    "400": _json(_ref("Error"), "Malformed body, query or id"),
    "401": _json(_ref("Error"), "No or invalid admin credential"),
    "403": _json(_ref("Error"), "Not an admin"),
}
_not_found = {"404": _json(_ref("Error"), "Unknown id")}
_id_param = {"name": "id", "in": "path", "required": True, "schema": _uuid}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


SCHEMAS: dict[str, Any] = {
    "Error": ERROR_SCHEMA,
    "Channel": {
        "type": "object",
        "required": [
            "id",
            "pattern",
            "description",
            "webhookUrls",
            "enabled",
            "createdAt",
            "updatedAt",
        ],
        "properties": {
            "id": _uuid,
            "pattern": {"type": "string"},
            "description": _nullable_text,
            "webhookUrls": {"type": ["array", "null"], "items": {"type": "string"}},
            "enabled": {"type": "boolean"},
            "createdAt": _time,
            "updatedAt": _time,
        },
    },
    "ChannelCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["pattern"],
        "properties": {
            "pattern": _pattern,
            "description": _description,
            "webhookUrls": _webhook_urls,
            "enabled": {"type": "boolean", "default": True},
            "webhookSecret": _webhook_secret,
        },
    },
    "ChannelUpdate": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "pattern": _pattern,
            "description": _description,
            "webhookUrls": _webhook_urls,
            "enabled": {"type": "boolean"},
            "webhookSecret": _webhook_secret,
        },
    },
    "Message": {
        "type": "object",
        "properties": {
            "id": _uuid,
            "eventName": {"type": "string"},
            "channelId": {"type": ["string", "null"], "format": "uuid"},
            "channelName": {"type": "string"},
            "payload": {"type": "object"},
            "senderType": {"type": "string", "enum": ["system", "user"]},
            "senderId": {"type": ["string", "null"], "format": "uuid"},
            "wsAudienceCount": {"type": "integer"},
            "whAudienceCount": {"type": "integer"},
            "whDeliveredCount": {"type": "integer"},
            "createdAt": _time,
            "position": {
                "type": "integer",
                "description": "1, 2, 3, ... per channel name; `since` in a subscribe frame",
            },
        },
    },
    "MessageStats": {
        "type": "object",
        "properties": {
            "totalMessages": {"type": "integer"},
            "whDeliveryRate": {"type": "number"},
            "topEvents": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"eventName": {"type": "string"}, "count": {"type": "integer"}},
                },
            },
            "retentionDays": {"type": ["integer", "null"]},
        },
    },
    "Config": {
        "type": "object",
        "additionalProperties": False,
        "required": ["retentionDays"],
        "properties": {
            "retentionDays": {"type": ["integer", "null"], "minimum": 1, "maximum": 36500}
        },
    },
    "ReplicaIdentity": {
        "type": "object",
        "required": ["schema", "table", "replicaIdentity"],
        "properties": {
            "schema": {"type": "string"},
            "table": {"type": "string"},
            "replicaIdentity": {
                "type": "string",
                "enum": ["default", "full", "nothing", "index"],
                "description": "default: the primary key; full: the whole row; "
                "index: a chosen unique index; nothing: none",
            },
        },
    },
    "ReplicaIdentityUpdate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["replicaIdentity"],
        "properties": {"replicaIdentity": {"type": "string", "enum": ["full", "default"]}},
    },
    "Policy": {
        "type": "object",
        "properties": {
            "policyName": {"type": "string"},
            "tableName": {"type": "string"},
            "command": {"type": "string"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "using": _nullable_text,
            "withCheck": _nullable_text,
        },
    },
}

PATHS: dict[str, Any] = {
    "/api/realtime/channels": {
        "get": {
            "summary": "List channels",
            "responses": {"200": _json({"type": "array", "items": _ref("Channel")}), **_errors},
        },
        "post": {
            "summary": "Create a channel",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("ChannelCreate")}}},
            "responses": {"201": _json(_ref("Channel"), "Created"), **_errors,
                          "409": _json(_ref("Error"), "Duplicate pattern")},
        },
    },
    "/api/realtime/channels/{id}": {
        "parameters": [_id_param],
        "get": {"summary": "Get a channel",
                "responses": {"200": _json(_ref("Channel")), **_errors, **_not_found}},
        "put": {
            "summary": "Update a channel (fields given are changed; null clears)",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("ChannelUpdate")}}},
            "responses": {"200": _json(_ref("Channel")), **_errors, **_not_found,
                          "409": _json(_ref("Error"), "Duplicate pattern")},
        },
        "delete": {
            "summary": "Delete a channel and end its subscriptions (history is kept)",
            "responses": {"200": _json({"type": "object",
                                        "properties": {"message": {"type": "string"}}}),
                          **_errors, **_not_found},
        },
    },
    "/api/realtime/messages": {
        "get": {
            "summary": "Message history, newest first",
            "parameters": [
                _query("channelId", _uuid, "only this channel"),
                _query("eventName", {"type": "string", "minLength": 1, "maxLength": 255},
                       "only this event"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                 "default": 100}, "page size"),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 2147483647,
                                  "default": 0}, "messages to skip"),
            ],
            "responses": {"200": _json({"type": "array", "items": _ref("Message")}), **_errors},
        },
        "delete": {
            "summary": "Delete messages",
            "parameters": [
                _query("channelId", _uuid, "only this channel"),
                _query("before", _time, "only messages created before this time"),
            ],
            "responses": {"200": _json({"type": "object",
                                        "properties": {"deleted": {"type": "integer"}}}),
                          **_errors},
        },
    },
    "/api/realtime/messages/stats": {
        "get": {
            "summary": "Message statistics",
            "parameters": [
                _query("channelId", _uuid, "only this channel"),
                _query("since", _time, "only messages created at or after this time"),
            ],
            "responses": {"200": _json(_ref("MessageStats")), **_errors},
        }
    },
    "/api/realtime/config": {
        "get": {"summary": "Retention setting", "responses": {"200": _json(_ref("Config")),
                                                              **_errors}},
        "patch": {
            "summary": "Change the retention (null keeps messages forever)",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("Config")}}},
            "responses": {"200": _json(_ref("Config")), **_errors},
        },
    },
    "/api/realtime/permissions": {
        "get": {
            "summary": "Subscribe and publish policies, read from PostgreSQL",
            "responses": {"200": _json({
                "type": "object",
                "properties": {
                    "subscribe": {"type": "object", "properties": {
                        "policies": {"type": "array", "items": _ref("Policy")}}},
                    "publish": {"type": "object", "properties": {
                        "policies": {"type": "array", "items": _ref("Policy")}}},
                },
            }), **_errors},
        }
    },
    tables.PATH: {
        "parameters": [{
            "name": "table", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1},
            "description": "`schema.table` (or `table` for schema public), case-sensitive; "
                           "the first dot separates the schema",
        }],
        "get": {
            "summary": "Replica identity of a table (what UPDATE/DELETE changes carry in old)",
            "responses": {"200": _json(_ref("ReplicaIdentity")), **_errors,
                          "404": _json(_ref("Error"), "No such table")},
        },
        "put": {
            "summary": "Set REPLICA IDENTITY FULL or DEFAULT (partitions too)",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("ReplicaIdentityUpdate")}}},
            "responses": {
                "200": _json(_ref("ReplicaIdentity")),
                **_errors,
                "403": _json(_ref("Error"), "Not an admin, or the server's database user "
                                            "does not own the table"),
                "404": _json(_ref("Error"), "No such table"),
                "409": _json(_ref("Error"), "The table stayed locked for 5 s, or DEFAULT "
                                            "would leave a published table without a key"),
            },
        },
    },
    "/api/realtime/openapi.json": {
        "get": {"summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document"}}}
    },
}  # fmt: skip


def document(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "pgrealtime REST API", "version": "1"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {**PATHS, **(extra_paths or {})},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "API key (ik_...) or a project_admin JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }  # fmt: skip


@routes.get("/api/realtime/openapi.json")
async def serve_openapi(request: web.Request) -> web.Response:
    body = orjson.dumps(document(request.app.get(keys.OPENAPI_EXTRA_PATHS)))
    return web.Response(body=body, content_type="application/json")
