"""GET /metrics: the Prometheus exposition, admin-only unless --metrics-public.

The figures map the deployment (connection counts, hosts' queues, lag), so by default
a scrape needs the admin API key, the same check as the REST API
(`Authorization: Bearer <api key>`, as Prometheus' `authorization` setting sends it).
`--metrics-public` opens the route for a scrape network that cannot carry a secret.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from pgrealtime import keys
from pgrealtime.api.errors import ApiError
from pgrealtime.api.middleware import credential
from pgrealtime.auth import AuthError
from pgrealtime.observe.collector import ServerParts

routes = web.RouteTableDef()


def server_parts(app: web.Application) -> ServerParts:
    """What a scrape reads of this server: whatever is built so far (before the
    database is up, only the process figures and the connection counts)."""
    ctx = app.get(keys.SESSION_CONTEXT)
    return ServerParts(
        protocols=app[keys.PROTOCOL_SESSIONS],
        hub=app.get(keys.HUB),
        ordering=app.get(keys.DELIVERY),
        publisher=app.get(keys.PUBLISHER),
        pool=app.get(keys.POOL),
        listener=app.get(keys.LISTENER),
        feed=app.get(keys.CHANGES),
        db_channels=None if ctx is None else ctx.db_channels,
        webhooks=app.get(keys.WEBHOOKS),
        expiry=None if ctx is None else ctx.expiry,
        revalidator=app.get(keys.REVALIDATOR),
        errors=None if ctx is None else ctx.errors,
        database=app[keys.DATABASE_FIGURES],
    )


def _check_admin(request: web.Request) -> None:
    given = credential(request)
    if given is None:
        raise ApiError(401, "AUTH_UNAUTHORIZED", "No admin token provided")
    try:
        principal = request.app[keys.AUTHENTICATOR].authenticate(given)
    except AuthError as exc:
        raise ApiError(401, "AUTH_INVALID_TOKEN", exc.message) from exc
    if not principal.is_admin:
        raise ApiError(403, "AUTH_FORBIDDEN", "Admin access required")


async def refresh(app: web.Application) -> None:
    """Ask PostgreSQL for the figures only it knows (before reading the registry)."""
    pool = app.get(keys.POOL)
    if pool is not None:
        await app[keys.DATABASE_FIGURES].refresh(pool)


async def current(app: web.Application) -> dict[str, float]:
    """Every figure now, as a flat dict (`Metrics.snapshot`): for in-process readers
    such as the dashboard, which then need no HTTP round trip or text parsing."""
    await refresh(app)
    return app[keys.METRICS].snapshot()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    if not app[keys.SETTINGS].metrics_public:
        _check_admin(request)
    await refresh(app)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})
