"""Webhook test helpers: real HTTP receivers on loopback, channels, publishing."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from pgrealtime.config import Settings

FAST = {"base_delay": 0.05, "max_delay": 0.2, "poll_interval": 0.1}


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def delivery_id(self) -> str:
        return self.headers["X-InsForge-Delivery-ID"]


Reply = tuple[int, dict[str, str]] | int
Responder = Callable[[int, web.Request], Awaitable[Reply] | Reply]


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers from a
    script (one reply per request, then `default`) or a responder function."""

    script: list[Reply] = field(default_factory=list)
    default: Reply = 200
    responder: Responder | None = None
    delay: float = 0.0
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            index = len(self.requests)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.responder is not None:
                reply = self.responder(index, request)
                if asyncio.iscoroutine(reply):
                    reply = await reply
            else:
                reply = self.script[index] if index < len(self.script) else self.default
        finally:
            self.active -= 1
        status, headers = (reply, {}) if isinstance(reply, int) else reply
        self.requests.append(
            Received(time.monotonic(), request.path, dict(request.headers), body, status)
        )
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def answered(self, status: int = 200) -> Counter[str]:
        """Requests answered with `status`, counted by delivery id."""
        return Counter(r.delivery_id for r in self.requests if r.status == status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_allow_private_networks": True,
        "webhook_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


async def add_channel(pool: asyncpg.Pool, urls: list[str], pattern: str = "order:%") -> uuid.UUID:
    return await pool.fetchval(
        "INSERT INTO realtime.channels (pattern, webhook_urls) VALUES ($1, $2) RETURNING id",
        pattern,
        urls,
    )


async def publish(
    pool: asyncpg.Pool, channel: str = "order:1", event: str = "order.updated", payload: Any = None
) -> uuid.UUID:
    return await pool.fetchval(
        "SELECT realtime.publish($1, $2, $3::jsonb)",
        channel,
        event,
        orjson.dumps(payload if payload is not None else {"n": 1}).decode(),
    )


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def deliveries(pool: asyncpg.Pool, message_id: uuid.UUID | None = None) -> list[Any]:
    if message_id is None:
        return await pool.fetch("SELECT * FROM realtime.webhook_deliveries ORDER BY created_at")
    return await pool.fetch(
        "SELECT * FROM realtime.webhook_deliveries WHERE message_id = $1 ORDER BY url", message_id
    )


async def all_final(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM realtime.webhook_deliveries WHERE status = 'pending')"
    )
