"""The admin routes: list a message's deliveries, and requeue the failed ones."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pgrealtime import keys
from pgrealtime.api.errors import ApiError, error_response
from pgrealtime.api.webhooks import OPENAPI_PATHS, add_routes

from .helpers import add_channel, all_final, publish, wait_until


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """What the core's middleware does with ApiError."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    app = web.Application(middlewares=[errors])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the core uses a plain string key too
        app[keys.POOL] = pool
    add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield session, str(server.make_url("/api/realtime"))
    await server.close()


async def test_list_and_retry(pool, api, receivers, workers) -> None:
    session, base = api
    good, bad = await receivers(), await receivers(default=410)
    await add_channel(pool, [good.url, bad.url])
    worker = await workers()
    message_id = await publish(pool)
    await wait_until(lambda: all_final(pool))

    async with session.get(f"{base}/messages/{message_id}/deliveries") as response:
        assert response.status == 200
        listed = {d["url"]: d for d in await response.json()}
    delivered, failed = listed[good.url], listed[bad.url]
    assert set(delivered) == {
        "id", "messageId", "url", "status", "attempts", "lastError", "lastStatusCode",
        "nextAttemptAt", "deliveredAt", "createdAt", "updatedAt",
    }  # fmt: skip
    assert delivered["status"] == "delivered"
    assert delivered["messageId"] == str(message_id)
    assert delivered["lastStatusCode"] == 200
    assert delivered["deliveredAt"].endswith("Z")
    assert delivered["createdAt"].endswith("Z")
    assert delivered["nextAttemptAt"] is None
    assert delivered["id"] == good.requests[0].delivery_id
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    assert failed["lastStatusCode"] == 410
    assert failed["lastError"].startswith("HTTP 410")
    assert failed["deliveredAt"] is None

    await worker.stop()
    bad.default = 200
    async with session.post(f"{base}/messages/{message_id}/deliveries/retry") as response:
        assert response.status == 200
        assert await response.json() == {"requeued": 1}
    async with session.get(f"{base}/messages/{message_id}/deliveries") as response:
        requeued = {d["url"]: d for d in await response.json()}[bad.url]
    assert requeued["status"] == "pending"
    assert requeued["nextAttemptAt"].endswith("Z")

    await workers()
    await wait_until(lambda: all_final(pool))
    assert len(bad.requests) == 2
    assert len(good.requests) == 1
    counts = await pool.fetchrow(
        "SELECT wh_audience_count, wh_delivered_count FROM realtime.messages WHERE id = $1",
        message_id,
    )
    assert tuple(counts) == (2, 2)
    async with session.post(f"{base}/messages/{message_id}/deliveries/retry") as response:
        assert await response.json() == {"requeued": 0}


async def test_message_without_webhooks_has_no_deliveries(pool, api) -> None:
    session, base = api
    await add_channel(pool, [])
    message_id = await publish(pool)
    async with session.get(f"{base}/messages/{message_id}/deliveries") as response:
        assert response.status == 200
        assert await response.json() == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_errors(api, method: str) -> None:
    session, base = api
    suffix = "/deliveries" if method == "GET" else "/deliveries/retry"
    async with session.request(method, f"{base}/messages/not-a-uuid{suffix}") as response:
        assert response.status == 400
        body = await response.json()
        assert body["error"] == "INVALID_INPUT"
        assert body["statusCode"] == 400
    async with session.request(method, f"{base}/messages/{uuid.uuid4()}{suffix}") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "REALTIME_MESSAGE_NOT_FOUND"


def test_openapi_fragment() -> None:
    assert set(OPENAPI_PATHS) == {
        "/api/realtime/messages/{id}/deliveries",
        "/api/realtime/messages/{id}/deliveries/retry",
        "/api/realtime/webhooks/deliveries",
    }
    listing = OPENAPI_PATHS["/api/realtime/messages/{id}/deliveries"]["get"]
    assert set(listing["responses"]) == {"200", "400", "401", "404"}
    retry = OPENAPI_PATHS["/api/realtime/messages/{id}/deliveries/retry"]["post"]
    assert retry["parameters"][0]["name"] == "id"
