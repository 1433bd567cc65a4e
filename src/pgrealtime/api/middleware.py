"""Every error as JSON, and admin-only access to /api/realtime.

Both middlewares hand the WebSocket endpoint's coroutine straight through instead of
awaiting it: an awaiting middleware stays suspended for the connection's whole life,
about 600 bytes of coroutine frame per middleware per connection. The endpoint
answers its one HTTP error (not an upgrade request) itself, as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from pgrealtime import keys
from pgrealtime.api.errors import ApiError, error_response
from pgrealtime.auth import Authenticator, AuthError

log = logging.getLogger(__name__)

API_PREFIX = "/api/realtime"
WEBSOCKET_PATH = "/realtime"
PUBLIC_PATHS = {f"{API_PREFIX}/openapi.json"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def credential(request: web.Request) -> str | None:
    """The bearer token or `x-api-key` of a request, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


@web.middleware
def error_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    if request.path == WEBSOCKET_PATH and request.method == "GET":
        return handler(request)
    return _json_errors(request, handler)


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(
            exc.status, "HTTP_ERROR"
        )
        return error_response(exc.status, code, exc.reason)
    except Exception:
        if request.writer.output_size > 0:
            # A response is under way (an upgraded WebSocket): a second one would be
            # written into its stream. aiohttp logs the error and drops the connection.
            raise
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "Internal server error")


@web.middleware
def admin_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    path = request.path
    if not path.startswith(API_PREFIX) or path in PUBLIC_PATHS:
        return handler(request)
    return _admin_only(request, handler)


async def _admin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = credential(request)
    if given is None:
        raise ApiError(401, "AUTH_UNAUTHORIZED", "No admin token provided")
    authenticator: Authenticator = request.app[keys.AUTHENTICATOR]
    try:
        principal = await authenticator.authenticate_async(given)
    except AuthError as exc:
        raise ApiError(401, "AUTH_INVALID_TOKEN", exc.message) from exc
    if not principal.is_admin:
        raise ApiError(403, "AUTH_FORBIDDEN", "Admin access required")
    return await handler(request)
