"""GET /health: 200 once the database answers and the schema is applied."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from pgrealtime.api.channels import json_response

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    body: dict = {"status": "ok"}
    status = 200
    try:
        await asyncio.wait_for(
            request.app["pool"].fetchval("SELECT 1 FROM realtime.config"), timeout=2
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        body = {"status": "degraded", "database": "unreachable"}
        status = 503
    listener = request.app.get("listener")
    if listener is not None and not listener.connected.is_set():
        body["listener"] = "reconnecting"
    for name, provider in request.app["health_extras"].items():
        body[name] = provider()
    return json_response(body, status=status)
