"""GET /health: 200 once the database answers and the schema is applied.

Anyone (a load balancer) gets only the status; the details (this process as
machine:pid:origin, the cluster's members and leader, database and listener state,
change feed status with its hosts, LSNs, table names and error texts) go to callers
with an admin credential, since they map the deployment for an attacker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.http import json_response
from pgrealtime.api.middleware import credential
from pgrealtime.auth import Authenticator, AuthError
from pgrealtime.db import errors as db_errors
from pgrealtime.engine.bus.pg_leader import APP_PREFIX, member_name

routes = web.RouteTableDef()


def _is_admin(request: web.Request) -> bool:
    """A valid admin credential came with the request (a wrong one is no error here:
    the caller just gets the public answer)."""
    given = credential(request)
    if given is None:
        return False
    authenticator: Authenticator = request.app[keys.AUTHENTICATOR]
    try:
        return authenticator.authenticate(given).is_admin
    except AuthError:
        return False


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    status = 200
    details: dict[str, Any] = {"database": "ok"}
    try:
        await asyncio.wait_for(
            request.app[keys.POOL].fetchval("SELECT 1 FROM realtime.config"), timeout=2
        )
    except db_errors.FAILED:
        details["database"] = "unreachable"
        status = 503
    body: dict[str, Any] = {"status": "ok" if status == 200 else "degraded"}
    bus_problem = getattr(request.app.get(keys.LISTENER), "problem", None)
    problem = bus_problem() if callable(bus_problem) else None
    if problem is not None:  # still serving its own subscribers: 200, but say so
        body = {"status": "degraded", "reason": problem}
    if not _is_admin(request):
        return json_response(body, status=status)
    details["process"] = member_name(request.app[keys.ORIGIN])[len(APP_PREFIX) :]
    listener = request.app.get(keys.LISTENER)
    if listener is not None:
        details["listener"] = "connected" if listener.connected.is_set() else "reconnecting"
    for name, provider in request.app[keys.HEALTH_EXTRAS].items():
        details[name] = provider()
    body["details"] = details
    return json_response(body, status=status)
