"""The dashboard's server side on a real server: the page's files and headers, the
snapshot it polls (admin-only, live figures), and the latest webhook deliveries."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from tests.conftest import Server, eventually, make_settings

from pgrealtime import keys
from pgrealtime.dashboard.pages import FILES


@pytest.fixture
def server_settings():
    # webhook receivers run on loopback in these tests
    return make_settings(webhook_allow_private_networks=True)


async def test_the_page_and_its_files_are_served_with_a_strict_policy(server: Server) -> None:
    async with server.http.get(server.base + "/dashboard") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
        policy = resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    for name in ("dashboard.js", "dashboard.css"):
        assert f"/dashboard/{name}" in page
    for name, content_type in FILES.items():
        async with server.http.get(f"{server.base}/dashboard/{name}") as resp:
            assert resp.status == 200 and resp.content_type == content_type
            assert len(await resp.read()) > 500
    async with server.http.get(server.base + "/dashboard/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/dashboard"
    for name in ("../app.py", "figures.py", "static", "%2e%2e%2fapp.py"):
        async with server.http.get(f"{server.base}/dashboard/{name}") as resp:
            assert resp.status == 404, name


async def test_the_snapshot_is_for_admins_only(server: Server) -> None:
    status, _ = await server.api("GET", "/api/realtime/dashboard", headers={})
    assert status == 401
    user = {"Authorization": f"Bearer {server.token()}"}
    status, _ = await server.api("GET", "/api/realtime/dashboard", headers=user)
    assert status == 403


async def test_the_snapshot_counts_connections_subscribers_publishes_and_deliveries(
    server: Server,
) -> None:
    await server.create_channel("room:*")
    status, before = await server.api("GET", "/api/realtime/dashboard")
    assert status == 200
    assert before["connections"] == 0 and before["channels"] == []
    assert before["changes"] == {"enabled": False, "reason": "off (--no-changes)",
                                 "state": "disabled"}  # fmt: skip
    assert before["webhooks"] == {"pending": 0, "pendingCapped": False}
    assert before["listener"] in ("connected", "reconnecting")

    readers = [await server.connect(server.token()) for _ in range(3)]
    for reader in readers:
        assert (await reader.subscribe("room:1"))["type"] == "subscribed"
    assert (await readers[0].subscribe("room:2"))["type"] == "subscribed"
    writer = await server.connect(server.token())
    await writer.subscribe("room:1")  # a publisher must be subscribed: 4 receive each
    for i in range(5):
        assert (await writer.publish("room:1", "said", {"i": i}))["type"] == "published"
    for reader in [*readers, writer]:
        for _ in range(5):
            await reader.expect("message")

    async def snapshot() -> dict:
        return (await server.api("GET", "/api/realtime/dashboard"))[1]

    after = await snapshot()
    assert after["connections"] == 4
    assert after["channels"] == [{"name": "room:1", "subscribers": 4},
                                 {"name": "room:2", "subscribers": 1}]  # fmt: skip
    assert after["channelsWithSubscribers"] == 2
    # each test token names its own user: one presence member per connection here
    assert after["presence"] == {"room:1": 4, "room:2": 1}
    assert after["published"] - before["published"] == 5
    assert after["monotonicSeconds"] > before["monotonicSeconds"]
    # deliveries are counted as each message is fanned out
    for _ in range(100):
        if after["delivered"] - before["delivered"] == 20:
            break
        await asyncio.sleep(0.05)
        after = await snapshot()
    assert after["delivered"] - before["delivered"] == 20

    await readers[0].close()
    await eventually(lambda: len(server.app[keys.SESSIONS].live) == 3)
    after = await snapshot()
    assert after["channels"] == [{"name": "room:1", "subscribers": 3}]


async def test_a_publish_the_database_refuses_is_not_counted(server: Server) -> None:
    await server.create_channel("open:*")
    await server.db.execute(
        "CREATE POLICY no_secrets ON realtime.messages AS RESTRICTIVE FOR INSERT"
        " TO authenticated WITH CHECK (event_name <> 'secret')"
    )
    writer = await server.connect(server.token())
    await writer.subscribe("open:1")
    _, before = await server.api("GET", "/api/realtime/dashboard")
    assert (await writer.publish("open:1", "secret", {}))["type"] == "error"
    assert (await writer.publish("open:1", "x", {}))["type"] == "published"
    _, after = await server.api("GET", "/api/realtime/dashboard")
    assert after["published"] - before["published"] == 1


async def test_the_latest_failed_deliveries_are_listed_and_can_be_retried(
    server: Server,
) -> None:
    answers = [410]

    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=answers[0])

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        url = f"http://127.0.0.1:{port}/hook"
        await server.create_channel("orders:*", webhookUrls=[url])
        await server.create_channel("quiet:*")
        writer = await server.connect(server.token())
        await writer.subscribe("orders:7")
        await writer.subscribe("quiet:1")
        sent = await writer.publish("orders:7", "order.paid", {"n": 7})
        assert (await writer.publish("quiet:1", "x", {}))["type"] == "published"

        async def failed() -> list:
            return (await server.api("GET", "/api/realtime/webhooks/deliveries"))[1]

        listed: list = []
        for _ in range(200):
            listed = await failed()
            if listed:
                break
            await asyncio.sleep(0.05)
        assert len(listed) == 1
        (delivery,) = listed
        assert delivery["messageId"] == sent["messageId"]
        assert delivery["channelName"] == "orders:7" and delivery["eventName"] == "order.paid"
        assert delivery["status"] == "failed" and delivery["lastStatusCode"] == 410
        assert delivery["url"] == url

        status, body = await server.api("GET", "/api/realtime/webhooks/deliveries?status=pending")
        assert status == 200 and body == []
        status, body = await server.api("GET", "/api/realtime/webhooks/deliveries?status=lost")
        assert status == 400 and body["error"] == "INVALID_INPUT"
        status, body = await server.api("GET", "/api/realtime/webhooks/deliveries?limit=0")
        assert status == 400

        answers[0] = 200
        status, body = await server.api(
            "POST", f"/api/realtime/messages/{sent['messageId']}/deliveries/retry"
        )
        assert status == 200 and body == {"requeued": 1}
        for _ in range(200):
            _, done = await server.api(
                "GET", "/api/realtime/webhooks/deliveries?status=delivered,failed,dead"
            )
            if done and done[0]["status"] == "delivered":
                break
            await asyncio.sleep(0.05)
        assert [d["status"] for d in done] == ["delivered"]
        assert await failed() == []
    finally:
        await runner.cleanup()
