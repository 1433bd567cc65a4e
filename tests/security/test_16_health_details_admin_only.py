"""Finding 16: /health told anyone the change feed's state (error texts with hosts and
users, LSNs, table names). Now anonymous callers get only the status and the HTTP code;
the details need the admin credential."""

from __future__ import annotations

import pytest
from tests.conftest import API_KEY, Server, make_settings

from pgrealtime import keys


@pytest.fixture
def server_settings():
    return make_settings(changes=True)  # the feed's status is the detail that leaked


async def _health(server: Server, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with server.http.get(server.base + "/health", headers=headers or {}) as resp:
        return resp.status, await resp.json()


async def test_anonymous_gets_status_only(server: Server) -> None:
    await server.wait_streaming()
    assert await _health(server) == (200, {"status": "ok"})
    # a client token or a wrong key is no admin: the same public answer
    user = {"Authorization": f"Bearer {server.token()}"}
    assert await _health(server, user) == (200, {"status": "ok"})
    assert await _health(server, {"Authorization": "Bearer ik_wrong"}) == (200, {"status": "ok"})


async def test_admin_gets_details(server: Server) -> None:
    await server.wait_streaming()
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}):
        status, body = await _health(server, headers)
        assert status == 200
        assert body["status"] == "ok"
        details = body["details"]
        assert details["database"] == "ok"
        # whatever the feed reports goes under details, unchanged
        assert details["changes"]["state"] == "streaming"
        assert set(server.app[keys.CHANGES].status()) <= set(details["changes"])
    admin_token = server.token(role="project_admin")
    status, body = await _health(server, {"Authorization": f"Bearer {admin_token}"})
    assert status == 200 and "details" in body


async def test_degraded_says_no_more_than_that(server: Server) -> None:
    await server.db.execute("ALTER TABLE realtime.config RENAME TO config_away")
    try:
        assert await _health(server) == (503, {"status": "degraded"})
        status, body = await _health(server, {"Authorization": f"Bearer {API_KEY}"})
        assert status == 503 and body["status"] == "degraded"
        assert body["details"]["database"] == "unreachable"
    finally:
        await server.db.execute("ALTER TABLE realtime.config_away RENAME TO config")
