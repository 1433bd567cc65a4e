"""Order tracking on pgrealtime, started with one command:

    python examples/orders/run.py          # then open http://127.0.0.1:8080

It starts `pgrealtime serve` (with its embedded PostgreSQL, in examples/orders/.data),
applies schema.sql (the orders table, its RLS policy, the channel policies and the
trigger calling realtime.publish()), creates the channels `order:*` (with a webhook to
this app) and `chat:*`, and serves the page plus the app's small backend:

- POST /token       a demo token for alice or bob (a real app mints them at login)
- GET  /api/orders  the user's orders (read as the user: RLS decides)
- POST /api/orders  place an order; POST /api/orders/{id}/advance  move it along
- POST /webhook     the webhook receiver: checks the signature, keeps the deliveries
- GET  /webhooks    what the receiver got

For a demo on loopback only: /token signs a token for whoever asks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
from aiohttp import web

HERE = Path(__file__).resolve().parent
USERS = {
    "alice": "a11ce000-0000-4000-8000-000000000001",
    "bob": "b0b00000-0000-4000-8000-000000000002",
}
STATUSES = ["placed", "packed", "shipped", "delivered"]
EMBEDDED_PORT = 54339  # the demo's own embedded PostgreSQL, apart from a default serve's


@dataclass
class Demo:
    """Everything the demo runs; `stop()` ends it."""

    realtime_url: str  # http://host:port of pgrealtime
    app_url: str  # http://host:port of this app (page, backend, webhook receiver)
    api_key: str
    jwt_secret: str
    webhook_secret: str
    db: asyncpg.Pool
    server: subprocess.Popen
    runner: web.AppRunner
    webhooks: list[dict[str, Any]] = field(default_factory=list)

    def token(self, user: str, expires_in: int = 3600) -> str:
        now = int(time.time())
        claims = {"sub": USERS[user], "role": "authenticated", "iat": now, "exp": now + expires_in}
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.db.close()
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self.server.wait, 30)


def _secrets(data_dir: Path) -> dict[str, str]:
    """The demo's secrets, generated once and kept in the data directory."""
    path = data_dir / "demo-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "api_key": "ik_" + secrets.token_urlsafe(32),
        "webhook_secret": secrets.token_urlsafe(32),
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    return values


async def _healthy(base: str, server: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(1200):
            if server.poll() is not None:
                raise RuntimeError("pgrealtime serve exited; see its output above")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("pgrealtime serve did not become healthy")


async def _channels(base: str, api_key: str, webhook_url: str) -> None:
    """Create (or update) the demo's channels through the REST API."""
    wanted = [
        {"pattern": "order:*", "description": "one order's timeline", "webhookUrls": [webhook_url]},
        {"pattern": "chat:*", "description": "support chat rooms"},
    ]
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(base + "/api/realtime/channels") as resp:
            existing = {c["pattern"]: c["id"] for c in await resp.json()}
        for channel in wanted:
            if channel["pattern"] in existing:
                url = f"{base}/api/realtime/channels/{existing[channel['pattern']]}"
                async with http.put(url, json=channel) as resp:
                    assert resp.status == 200, await resp.text()
            else:
                async with http.post(base + "/api/realtime/channels", json=channel) as resp:
                    assert resp.status == 201, await resp.text()


def _app(demo_ref: dict[str, Demo]) -> web.Application:
    routes = web.RouteTableDef()

    def demo() -> Demo:
        return demo_ref["demo"]

    @routes.get("/")
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "index.html")

    @routes.get("/config")
    async def config(request: web.Request) -> web.Response:
        ws = demo().realtime_url.replace("http://", "ws://") + "/realtime"
        return web.json_response({"realtimeUrl": ws, "users": list(USERS)})

    @routes.post("/token")
    async def token(request: web.Request) -> web.Response:
        user = (await request.json()).get("user")
        if user not in USERS:
            raise web.HTTPBadRequest(text="unknown user")
        return web.json_response({"token": demo().token(user), "userId": USERS[user]})

    @routes.get("/api/orders")
    async def orders(request: web.Request) -> web.Response:
        user = request.query.get("user", "")
        if user not in USERS:
            raise web.HTTPBadRequest(text="unknown user")
        async with demo().db.acquire() as conn, conn.transaction():
            # read as the user, so the same RLS policy decides as for db:orders
            claims = json.dumps({"sub": USERS[user], "role": "authenticated"})
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
            await conn.execute("SET LOCAL ROLE authenticated")
            rows = await conn.fetch("SELECT id, item, status FROM orders ORDER BY updated_at")
        return web.json_response([{**dict(r), "id": str(r["id"])} for r in rows])

    @routes.post("/api/orders")
    async def place(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("user") not in USERS:
            raise web.HTTPBadRequest(text="unknown user")
        order_id = await demo().db.fetchval(
            "INSERT INTO orders (customer, item) VALUES ($1, $2) RETURNING id",
            uuid.UUID(USERS[body["user"]]),
            str(body.get("item") or "a teapot")[:100],
        )
        return web.json_response({"id": str(order_id)}, status=201)

    @routes.post("/api/orders/{id}/advance")
    async def advance(request: web.Request) -> web.Response:
        status = await demo().db.fetchval(
            "UPDATE orders SET status = CASE status WHEN 'placed' THEN 'packed'"
            " WHEN 'packed' THEN 'shipped' ELSE 'delivered' END, updated_at = now()"
            " WHERE id = $1 RETURNING status",
            uuid.UUID(request.match_info["id"]),
        )
        if status is None:
            raise web.HTTPNotFound()
        return web.json_response({"status": status})

    @routes.post("/webhook")
    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        signed = b"\n".join([
            b"v1", headers.get("X-InsForge-Timestamp", "").encode(),
            headers.get("X-InsForge-Delivery-ID", "").encode(), b"127.0.0.1", body,
        ])  # fmt: skip
        expected = hmac.new(demo().webhook_secret.encode(), signed, hashlib.sha256).hexdigest()
        given = [p.strip()[3:] for p in headers.get("X-InsForge-Signature", "").split(",")]
        verified = any(hmac.compare_digest(expected, g) for g in given)
        delivery = headers.get("X-InsForge-Delivery-ID")
        if not any(w["deliveryId"] == delivery for w in demo().webhooks):  # at least once
            demo().webhooks.append({"deliveryId": delivery, "verified": verified,
                                    **json.loads(body)})  # fmt: skip
        return web.Response(status=204 if verified else 401)

    @routes.get("/webhooks")
    async def webhooks(request: web.Request) -> web.Response:
        return web.json_response(demo().webhooks[-50:])

    app = web.Application()
    app.add_routes(routes)
    return app


async def start(
    *,
    data_dir: Path,
    realtime_port: int = 7130,
    app_port: int = 8080,
    database_url: str | None = None,
    quiet: bool = False,
) -> Demo:
    """Start pgrealtime, set the database up and serve the app; the test drives this."""
    keys = _secrets(data_dir)
    host = "127.0.0.1"
    app_url = f"http://{host}:{app_port}"
    env = {
        **os.environ,
        "PGREALTIME_DATA_DIR": str(data_dir),
        "PGREALTIME_EMBEDDED_PORT": str(EMBEDDED_PORT),
        "PGREALTIME_JWT_SECRET": keys["jwt_secret"],
        "PGREALTIME_API_KEY": keys["api_key"],
        "PGREALTIME_WEBHOOK_SECRET": keys["webhook_secret"],
        # the webhook receiver is this app, on loopback: refused unless allowed
        "PGREALTIME_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        # db: channels may publish this table only
        "PGREALTIME_CHANGES_TABLES": "public.orders",
    }
    if database_url:
        env["PGREALTIME_DATABASE_URL"] = database_url
    out = subprocess.DEVNULL if quiet else None
    server = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server runs apart
        [sys.executable, "-m", "pgrealtime.cli", "serve", "--host", host,
         "--port", str(realtime_port)],
        env=env, stdout=out, stderr=out,
    )  # fmt: skip
    realtime_url = f"http://{host}:{realtime_port}"
    try:
        await _healthy(realtime_url, server)
        if database_url is None:
            from pgrealtime.db.embedded import EmbeddedPostgres

            database_url = EmbeddedPostgres(data_dir, port=EMBEDDED_PORT).url
        db = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        await db.execute((HERE / "schema.sql").read_text())
        await _channels(realtime_url, keys["api_key"], app_url + "/webhook")
    except BaseException:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        raise
    ref: dict[str, Demo] = {}
    runner = web.AppRunner(_app(ref), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, app_port).start()
    ref["demo"] = Demo(realtime_url, app_url, keys["api_key"], keys["jwt_secret"],
                       keys["webhook_secret"], db, server, runner)  # fmt: skip
    return ref["demo"]


async def main() -> None:
    parser = argparse.ArgumentParser(description="Order tracking on pgrealtime")
    parser.add_argument("--data-dir", type=Path, default=HERE / ".data")
    parser.add_argument("--port", type=int, default=8080, help="the page (default 8080)")
    parser.add_argument("--realtime-port", type=int, default=7130)
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    args = parser.parse_args()
    demo = await start(data_dir=args.data_dir, realtime_port=args.realtime_port,
                       app_port=args.port, database_url=args.database_url)  # fmt: skip
    print(f"\nOrder tracking demo: open {demo.app_url} (Ctrl-C to stop)\n", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await demo.stop()


if __name__ == "__main__":
    asyncio.run(main())
