"""REST: /api/realtime routes, shapes and errors, against a real server."""

from __future__ import annotations

import uuid

import pytest
from tests.conftest import API_KEY, Server

from pgrealtime.api.openapi import PATHS

CHANNEL_FIELDS = {"id", "pattern", "description", "webhookUrls", "enabled", "createdAt",
                  "updatedAt"}  # fmt: skip
MESSAGE_FIELDS = {"id", "eventName", "channelId", "channelName", "payload", "senderType",
                  "senderId", "wsAudienceCount", "whAudienceCount", "whDeliveredCount",
                  "createdAt", "position"}  # fmt: skip


async def test_channel_crud(server: Server) -> None:
    created = await server.create_channel(
        "order:*", description="Order updates", webhookUrls=["https://example.com/hook"]
    )
    assert set(created) == CHANNEL_FIELDS
    assert created["pattern"] == "order:*" and created["enabled"] is True
    assert created["webhookUrls"] == ["https://example.com/hook"]
    assert created["createdAt"].endswith("Z")

    status, listed = await server.api("GET", "/api/realtime/channels")
    assert status == 200 and listed == [created]
    status, got = await server.api("GET", f"/api/realtime/channels/{created['id']}")
    assert status == 200 and got == created

    status, updated = await server.api(
        "PUT",
        f"/api/realtime/channels/{created['id']}",
        json={"description": None, "webhookUrls": None, "enabled": False},
    )
    assert status == 200
    assert updated["description"] is None and updated["webhookUrls"] is None
    assert updated["enabled"] is False and updated["pattern"] == "order:*"
    assert updated["updatedAt"] >= created["updatedAt"]

    status, body = await server.api("DELETE", f"/api/realtime/channels/{created['id']}")
    assert (status, body) == (200, {"message": "Channel deleted"})
    status, body = await server.api("GET", f"/api/realtime/channels/{created['id']}")
    assert status == 404 and body["error"] == "REALTIME_CHANNEL_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "REALTIME_INVALID_CHANNEL_REQUEST"),
        ({"pattern": 5}, "REALTIME_INVALID_CHANNEL_REQUEST"),
        ({"pattern": "a:*", "enabled": "yes"}, "REALTIME_INVALID_CHANNEL_REQUEST"),
        ({"pattern": "a:*", "unknown": 1}, "REALTIME_INVALID_CHANNEL_REQUEST"),
        ({"pattern": "a:*", "webhookUrls": ["ftp://x"]}, "REALTIME_INVALID_CHANNEL_REQUEST"),
        ({"pattern": "a:*", "webhookUrls": ["https://u:p@x.com"]},
         "REALTIME_INVALID_CHANNEL_REQUEST"),
        ({"pattern": ""}, "REALTIME_INVALID_CHANNEL_PATTERN"),
        ({"pattern": "*"}, "REALTIME_INVALID_CHANNEL_PATTERN"),
        ({"pattern": "a:**"}, "REALTIME_INVALID_CHANNEL_PATTERN"),
        ({"pattern": "has space"}, "REALTIME_INVALID_CHANNEL_PATTERN"),
        ({"pattern": "db:posts"}, "REALTIME_INVALID_CHANNEL_PATTERN"),
    ],
)  # fmt: skip
async def test_create_channel_rejects_bad_bodies(server: Server, body: dict, code: str) -> None:
    status, error = await server.api("POST", "/api/realtime/channels", json=body)
    assert status == 400 and error["error"] == code and error["statusCode"] == 400
    assert error["message"]


async def test_malformed_json_and_duplicates(server: Server) -> None:
    status, error = await server.api("POST", "/api/realtime/channels", data=b"{nope")
    assert status == 400 and error["error"] == "REALTIME_INVALID_CHANNEL_REQUEST"
    await server.create_channel("chat:*")
    for duplicate in ("chat:*", "chat:%"):
        status, error = await server.api(
            "POST", "/api/realtime/channels", json={"pattern": duplicate}
        )
        assert status == 409 and error["error"] == "DATABASE_DUPLICATE"
    other = await server.create_channel("room:*")
    status, error = await server.api(
        "PUT", f"/api/realtime/channels/{other['id']}", json={"pattern": "chat:*"}
    )
    assert status == 409


async def test_bad_ids_and_empty_updates(server: Server) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, error = await server.api(method, "/api/realtime/channels/not-a-uuid", json={})
        assert status == 400 and error["error"] == "INVALID_INPUT", method
    unknown = uuid.uuid4()
    status, error = await server.api("PUT", f"/api/realtime/channels/{unknown}",
                                     json={"enabled": True})  # fmt: skip
    assert status == 404
    created = await server.create_channel("x:*")
    status, error = await server.api("PUT", f"/api/realtime/channels/{created['id']}", json={})
    assert status == 400
    status, error = await server.api("PUT", f"/api/realtime/channels/{created['id']}",
                                     json={"pattern": None})  # fmt: skip
    assert status == 400


async def test_admin_only(server: Server) -> None:
    status, error = await server.api("GET", "/api/realtime/channels", headers={})
    assert (status, error["error"]) == (401, "AUTH_UNAUTHORIZED")
    assert error["message"] == "No admin token provided"
    status, error = await server.api(
        "GET", "/api/realtime/channels", headers={"Authorization": "Bearer garbage"}
    )
    assert status == 401
    status, error = await server.api(
        "GET", "/api/realtime/channels", headers={"Authorization": f"Bearer {server.token()}"}
    )
    assert (status, error["error"], error["message"]) == (
        403, "AUTH_FORBIDDEN", "Admin access required")  # fmt: skip
    for headers in (
        {"x-api-key": API_KEY},
        {"Authorization": f"Bearer {server.token(role='project_admin')}"},
    ):
        status, _ = await server.api("GET", "/api/realtime/channels", headers=headers)
        assert status == 200


async def _publish_many(server: Server, channel: str, events: list[str]) -> list[str]:
    ids = []
    for event in events:
        ids.append(str(await server.db.fetchval(
            "SELECT realtime.publish($1, $2, '{\"k\": 1}'::jsonb)", channel, event)))  # fmt: skip
    return ids


async def test_message_history_filters_and_paging(server: Server) -> None:
    a = await server.create_channel("a:*")
    await server.create_channel("b:*")
    ids_a = await _publish_many(server, "a:1", ["x", "y", "x"])
    await _publish_many(server, "b:1", ["x"])

    status, messages = await server.api("GET", "/api/realtime/messages")
    assert status == 200 and len(messages) == 4
    assert set(messages[0]) == MESSAGE_FIELDS
    status, messages = await server.api("GET", f"/api/realtime/messages?channelId={a['id']}")
    assert [m["id"] for m in messages] == ids_a[::-1]  # newest first
    assert messages[0]["channelName"] == "a:1" and messages[0]["senderType"] == "system"
    assert messages[0]["payload"] == {"k": 1}
    status, messages = await server.api(
        "GET", f"/api/realtime/messages?channelId={a['id']}&eventName=x&limit=1&offset=1"
    )
    assert [m["id"] for m in messages] == [ids_a[0]]

    for query in ("limit=0", "limit=1001", "limit=abc", "offset=-1", "channelId=zzz",
                  "eventName="):  # fmt: skip
        status, error = await server.api("GET", f"/api/realtime/messages?{query}")
        assert status == 400 and error["error"] == "INVALID_INPUT", query


async def test_message_stats(server: Server) -> None:
    a = await server.create_channel("a:*")
    await _publish_many(server, "a:1", ["e1", "e2", "e2", "e3", "e3"])
    await server.db.execute(
        "UPDATE realtime.messages SET wh_audience_count = 2, wh_delivered_count = 1"
        " WHERE event_name = 'e1'"
    )
    status, stats = await server.api("GET", f"/api/realtime/messages/stats?channelId={a['id']}")
    assert status == 200
    assert stats["totalMessages"] == 5
    assert stats["whDeliveryRate"] == 0.5
    assert stats["topEvents"] == [
        {"eventName": "e2", "count": 2},
        {"eventName": "e3", "count": 2},
        {"eventName": "e1", "count": 1},
    ]
    status, stats = await server.api(
        "GET", "/api/realtime/messages/stats?since=2999-01-01T00:00:00Z"
    )
    assert stats["totalMessages"] == 0 and stats["whDeliveryRate"] == 0
    status, _error = await server.api("GET", "/api/realtime/messages/stats?since=yesterday")
    assert status == 400


async def test_delete_messages_and_retention(server: Server) -> None:
    await server.create_channel("a:*")
    await _publish_many(server, "a:1", ["old", "old", "new"])
    await server.db.execute(
        "UPDATE realtime.messages SET created_at = now() - interval '10 days'"
        " WHERE event_name = 'old'"
    )
    status, config = await server.api("GET", "/api/realtime/config")
    assert (status, config) == (200, {"retentionDays": 30})  # the default of a new database
    status, config = await server.api("PATCH", "/api/realtime/config", json={"retentionDays": 7})
    assert (status, config) == (200, {"retentionDays": 7})
    status, messages = await server.api("GET", "/api/realtime/messages")
    assert [m["eventName"] for m in messages] == ["new"]  # enforced at once
    for bad in ({"retentionDays": 0}, {"retentionDays": "7"}, {}, {"other": 1}):
        status, _error = await server.api("PATCH", "/api/realtime/config", json=bad)
        assert status == 400, bad
    status, config = await server.api("PATCH", "/api/realtime/config", json={"retentionDays": None})
    assert config == {"retentionDays": None}

    status, body = await server.api("DELETE", "/api/realtime/messages")
    assert (status, body) == (200, {"deleted": 1})


async def test_permissions_reflect_live_policies(server: Server) -> None:
    status, body = await server.api("GET", "/api/realtime/permissions")
    assert status == 200
    subscribe = {p["policyName"]: p for p in body["subscribe"]["policies"]}
    assert subscribe["allow_authenticated_subscribe"] == {
        "policyName": "allow_authenticated_subscribe",
        "tableName": "realtime_channels",
        "command": "SELECT",
        "roles": ["authenticated"],
        "using": "enabled = true",
        "withCheck": None,
    }
    publish = {p["policyName"]: p for p in body["publish"]["policies"]}
    assert publish["allow_authenticated_publish"]["withCheck"] == "true"
    assert publish["allow_authenticated_publish"]["using"] is None
    await server.db.execute(
        "CREATE POLICY extra_publish ON realtime.messages FOR INSERT TO anon WITH CHECK (false)"
    )
    status, body = await server.api("GET", "/api/realtime/permissions")
    assert "extra_publish" in {p["policyName"] for p in body["publish"]["policies"]}


async def test_health_and_unknown_routes(server: Server) -> None:
    async with server.http.get(server.base + "/health") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    status, error = await server.api("GET", "/api/realtime/nope")
    assert status == 404 and error["statusCode"] == 404
    status, error = await server.api("PATCH", "/api/realtime/channels")
    assert status == 405 and error["error"] == "METHOD_NOT_ALLOWED"


async def test_openapi_document_matches_the_routes(server: Server) -> None:
    async with server.http.get(server.base + "/api/realtime/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    documented = {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = {
        (route.resource.canonical, route.method)
        for route in server.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/realtime")
        and route.method != "HEAD"
    }
    assert documented == served
    assert set(PATHS) <= set(doc["paths"])
