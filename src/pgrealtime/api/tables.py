"""Replica identity of an application table over REST (the twin of the
`pgrealtime replica-identity` command), so an admin can make a table without a
primary key subscribable, or get whole old rows, without a database shell.

    GET /api/realtime/tables/{table}/replica-identity
    PUT /api/realtime/tables/{table}/replica-identity   {"replicaIdentity": "full"}

`{table}` is `schema.table` (or `table` for schema public), parsed like the command's.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
import msgspec
from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.errors import ApiError, bad_request
from pgrealtime.api.http import json_response
from pgrealtime.api.params import parse_body
from pgrealtime.changes.admin import BadTableName, parse_table_name
from pgrealtime.changes.feed import (
    ReplicaIdentityRequired,
    replica_identity,
    set_replica_identity_full,
)

routes = web.RouteTableDef()

PATH = "/api/realtime/tables/{table}/replica-identity"
TABLE_NOT_FOUND = "REALTIME_TABLE_NOT_FOUND"


class ReplicaIdentityUpdate(msgspec.Struct, forbid_unknown_fields=True):
    replicaIdentity: Literal["full", "default"]


def _table(request: web.Request) -> tuple[str, str]:
    try:
        return parse_table_name(request.match_info["table"])
    except BadTableName as exc:
        raise bad_request(str(exc)) from exc


def _not_found(schema: str, table: str) -> ApiError:
    return ApiError(404, TABLE_NOT_FOUND, f"Table {schema}.{table} not found")


def _identity_json(schema: str, table: str, identity: str) -> dict[str, Any]:
    return {"schema": schema, "table": table, "replicaIdentity": identity}


@routes.get(PATH)
async def get_replica_identity(request: web.Request) -> web.Response:
    schema, table = _table(request)
    try:
        identity = await replica_identity(request.app[keys.POOL], schema, table)
    except LookupError as exc:
        raise _not_found(schema, table) from exc
    return json_response(_identity_json(schema, table, identity))


@routes.put(PATH)
async def put_replica_identity(request: web.Request) -> web.Response:
    schema, table = _table(request)
    body = await parse_body(request, ReplicaIdentityUpdate)
    try:
        await set_replica_identity_full(
            request.app[keys.POOL], schema, table, full=body.replicaIdentity == "full"
        )
    except LookupError as exc:
        raise _not_found(schema, table) from exc
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ApiError(
            403,
            "DATABASE_PERMISSION_DENIED",
            f"The server's database user may not change table {schema}.{table}: {exc} "
            f"(it takes the table's owner or a superuser)",
        ) from exc
    except ReplicaIdentityRequired as exc:
        raise ApiError(409, "REALTIME_REPLICA_IDENTITY_REQUIRED", str(exc)) from exc
    except asyncpg.LockNotAvailableError as exc:
        raise ApiError(
            409, "REALTIME_TABLE_BUSY", f"Table {schema}.{table} is locked; try again later"
        ) from exc
    return json_response(_identity_json(schema, table, body.replicaIdentity))
